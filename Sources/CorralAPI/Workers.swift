import CorralCore
import Foundation

/// The worker link's handshake (docs/workers.md). The worker dials the control plane and asks
/// for an upgrade; once corrald answers 101 the roles reverse: corrald is the HTTP/2 client
/// and the worker serves corral's own API, one stream per call.
public enum WorkerProtocol {
    /// The protocol versions this build speaks. A worker sends its range; corrald answers with
    /// the newest both speak, or 426 naming its own range.
    public static let versions: ClosedRange<Int> = 1...1
    public static let upgradeToken = "corral-worker"
    public static let connectPath = "/v1/workers/connect"

    public static let protocolHeader = "Corral-Worker-Protocol"
    public static let nameHeader = "Corral-Worker-Name"
    public static let groupHeader = "Corral-Worker-Group"
    public static let versionHeader = "Corral-Worker-Version"
    public static let epochHeader = "Corral-Worker-Epoch"
    /// On the 101: which control-plane replica took the link (its name in `WorkerReplicas`).
    public static let replicaHeader = "Corral-Replica"
    /// On a call from the control plane: whose call it is. Only the worker link carries it; a
    /// client's own is dropped.
    public static let tenantHeader = "Corral-Tenant"

    /// "1" or "1-3".
    public static func format(_ range: ClosedRange<Int>) -> String {
        range.lowerBound == range.upperBound ? "\(range.lowerBound)" : "\(range.lowerBound)-\(range.upperBound)"
    }

    public static func parse(_ text: String) -> ClosedRange<Int>? {
        let parts = text.trimmingCharacters(in: .whitespaces).split(separator: "-", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let low = Int(parts[0]), let last = parts.last, let high = Int(last),
            low >= 1,
            low <= high
        else { return nil }
        return low...high
    }

    /// The newest version in both ranges.
    public static func negotiate(_ offered: ClosedRange<Int>, with supported: ClosedRange<Int> = versions) -> Int? {
        let high = min(offered.upperBound, supported.upperBound)
        return high >= max(offered.lowerBound, supported.lowerBound) ? high : nil
    }
}

/// What a worker offers: the engine host's size and how many sandboxes it takes.
public struct WorkerCapacity: Codable, Sendable, Hashable {
    public var cpus: Int
    public var memoryBytes: Int64
    /// Most sandboxes it runs at once (`corral worker --max-sandboxes`).
    public var maxSandboxes: Int

    public init(cpus: Int, memoryBytes: Int64, maxSandboxes: Int) {
        self.cpus = cpus
        self.memoryBytes = memoryBytes
        self.maxSandboxes = maxSandboxes
    }
}

/// One warm pool on a worker.
public struct WorkerPoolStatus: Codable, Sendable, Hashable {
    public var template: String
    /// Members ready to claim.
    public var ready: Int
    public var target: Int

    public init(template: String, ready: Int, target: Int) {
        self.template = template
        self.ready = ready
        self.target = target
    }
}

/// Idle members a worker keeps of one template, as the control plane sets them: its share of
/// the group's target (`[[workers.pools]]` in the control plane's corral.toml).
public struct WorkerPoolTarget: Codable, Sendable, Hashable {
    public var template: String
    public var minIdle: Int

    public init(template: String, minIdle: Int) {
        self.template = template
        self.minIdle = minIdle
    }
}

/// `PUT /v1/worker/pools` on a worker: every target the control plane sets. A template it does
/// not name goes back to the worker's own `min_idle`.
public struct WorkerPoolTargets: Codable, Sendable, Hashable {
    public var targets: [WorkerPoolTarget]

    public init(targets: [WorkerPoolTarget]) { self.targets = targets }
}

/// `PUT /v1/worker/replicas` on a worker: the control-plane replicas that share the fleet's
/// store, each with the address workers dial. The worker keeps a link to each, so that every
/// replica reaches every worker without a hop through another replica (docs/workers.md).
public struct WorkerReplicas: Codable, Sendable, Hashable {
    public var replicas: [WorkerReplica]

    public init(replicas: [WorkerReplica]) { self.replicas = replicas }
}

public struct WorkerReplica: Codable, Sendable, Hashable {
    /// The replica's name, as its handshake's `Corral-Replica` gives it.
    public var id: String
    /// `https://host:port` (or `http://` on loopback): the replica's worker port.
    public var url: String

    public init(id: String, url: String) {
        self.id = id
        self.url = url
    }
}

/// A sandbox a worker runs, as its heartbeat lists it.
public struct WorkerSandbox: Codable, Sendable, Hashable {
    public var id: SandboxID
    public var tenant: TenantID

    public init(id: SandboxID, tenant: TenantID) {
        self.id = id
        self.tenant = tenant
    }
}

/// `GET /v1/worker/status` on a worker, the control plane's heartbeat: what the worker offers
/// and runs now.
public struct WorkerStatus: Codable, Sendable, Hashable {
    public var name: String
    public var group: String
    public var version: String
    public var epoch: Int64
    public var capacity: WorkerCapacity
    public var templates: [String]
    public var pools: [WorkerPoolStatus]
    public var sandboxes: [WorkerSandbox]

    public init(
        name: String, group: String, version: String, epoch: Int64, capacity: WorkerCapacity, templates: [String],
        pools: [WorkerPoolStatus], sandboxes: [WorkerSandbox]
    ) {
        self.name = name
        self.group = group
        self.version = version
        self.epoch = epoch
        self.capacity = capacity
        self.templates = templates
        self.pools = pools
        self.sandboxes = sandboxes
    }
}

/// One worker, as `GET /v1/workers` (`corral worker ls`) shows it.
public struct WorkerSummary: Codable, Sendable, Hashable {
    public var name: String
    public var group: String
    /// `connected`; `unreachable` (its link is gone, within the grace); `lost` (past it).
    public var state: String
    public var version: String
    public var `protocol`: Int
    public var epoch: Int64
    public var address: String?
    public var connected: Date
    public var lastHeartbeat: Date?
    public var capacity: WorkerCapacity?
    public var sandboxes: Int
    public var templates: [String]
    public var pools: [WorkerPoolStatus]

    public init(
        name: String, group: String, state: String, version: String, protocol: Int, epoch: Int64, address: String?,
        connected: Date, lastHeartbeat: Date?, capacity: WorkerCapacity?, sandboxes: Int, templates: [String],
        pools: [WorkerPoolStatus]
    ) {
        self.name = name
        self.group = group
        self.state = state
        self.version = version
        self.protocol = `protocol`
        self.epoch = epoch
        self.address = address
        self.connected = connected
        self.lastHeartbeat = lastHeartbeat
        self.capacity = capacity
        self.sandboxes = sandboxes
        self.templates = templates
        self.pools = pools
    }
}

extension CorralClient {
    public func listWorkers() async throws -> [WorkerSummary] {
        try await call(.get, "/v1/workers")
    }
}
