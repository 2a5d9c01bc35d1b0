import CorralCore
import CorralPolicy
import DockerEngine
import Foundation

/// What a listing or an inspection tells about a sandbox: the engine's view, with the
/// per-session settings from its record.
public struct SandboxInfo: Sendable, Codable, Hashable {
    public var id: SandboxID
    public var tenant: TenantID
    public var containerID: String
    public var image: String
    public var runtime: String
    /// created, running, exited, dead, ... as the engine says.
    public var state: String
    public var created: Date?
    public var expires: Date?
    public var session: SessionID?
    public var labels: [String: String]
    /// The template it came from, if any.
    public var template: TemplateName?
    /// `warm` (claimed from a pool) or `cold`; nil when it has no record.
    public var path: ProvisionReport.Path?
    /// When it was handed out (claimed, or made cold).
    public var bound: Date?
    public var idleTTLSeconds: Double?
    public var lastActivity: Date?
    /// The repository in /workspace and the branch it is on.
    public var workspace: SandboxWorkspace?
    /// Hosts its gateway lets it reach; nil when no gateway serves it.
    public var egressHosts: [String]?
    /// The worker that runs it; nil: the service's own engine host.
    public var worker: String?
    /// Its limits as its engine holds them; nil in listings, which the engine gives without.
    public var limits: SandboxLimits?
    /// How it ended, once it is not running; nil in listings and while it runs.
    public var exit: SandboxExit?

    init?(summary: ContainerSummary, record: SandboxRecord?, lastActivity: Date?) {
        guard let (tenant, id) = SandboxLabels.parse(containerName: summary.name) else { return nil }
        self.init(
            id: id, tenant: tenant, containerID: summary.id, image: summary.image, state: summary.state,
            labels: summary.labels, record: record, lastActivity: lastActivity)
    }

    init?(inspect: ContainerInspect, record: SandboxRecord?, lastActivity: Date?) {
        guard let (tenant, id) = SandboxLabels.parse(containerName: inspect.name) else { return nil }
        self.init(
            id: id, tenant: tenant, containerID: inspect.id, image: inspect.config.image ?? "",
            state: inspect.state.status,
            labels: inspect.config.labels ?? [:], record: record, lastActivity: lastActivity)
        if let host = inspect.hostConfig {
            limits = SandboxLimits(
                memoryBytes: host.memory.flatMap { $0 > 0 ? $0 : nil },
                cpus: host.nanoCpus.flatMap { $0 > 0 ? Double($0) / 1e9 : nil },
                pids: host.pidsLimit.flatMap { $0 > 0 ? $0 : nil })
        }
        if !inspect.state.running, inspect.state.status != "created" {
            exit = SandboxExit(code: inspect.state.exitCode, oomKilled: inspect.state.oomKilled)
        }
    }

    init(
        id: SandboxID, tenant: TenantID, containerID: String, image: String, state: String,
        labels engineLabels: [String: String],
        record: SandboxRecord?, lastActivity: Date?
    ) {
        self.id = id
        self.tenant = tenant
        self.containerID = containerID
        self.image = image
        self.state = state
        self.runtime = engineLabels[SandboxLabels.runtime] ?? "runc"
        self.created = ContainerMaker.createdDate(engineLabels)
        self.template = engineLabels[SandboxLabels.template].flatMap(TemplateName.init)
        self.expires = record?.expires
        self.session = record?.session
        self.labels = record?.labels ?? [:]
        self.path = record?.path
        self.bound = record?.bound
        self.idleTTLSeconds = record?.idleTTLSeconds
        self.lastActivity = lastActivity
        self.workspace = record?.workspace
        self.egressHosts = record?.gateway?.egressHosts
    }
}

/// A sandbox's limits as its engine holds them; nil where it has none.
public struct SandboxLimits: Sendable, Codable, Hashable {
    public var memoryBytes: Int64?
    public var cpus: Double?
    public var pids: Int64?

    public init(memoryBytes: Int64? = nil, cpus: Double? = nil, pids: Int64? = nil) {
        self.memoryBytes = memoryBytes
        self.cpus = cpus
        self.pids = pids
    }
}

/// How a sandbox that no longer runs ended: its first process's exit code, and whether the
/// kernel killed it for memory.
public struct SandboxExit: Sendable, Codable, Hashable {
    public var code: Int
    public var oomKilled: Bool

    public init(code: Int, oomKilled: Bool) {
        self.code = code
        self.oomKilled = oomKilled
    }
}
