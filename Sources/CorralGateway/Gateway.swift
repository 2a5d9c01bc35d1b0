import CorralCore
import CorralPolicy
import CurlHTTP
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The only way out of a sandbox: one unix socket per sandbox, a git smart-HTTP proxy that
/// adds credentials from the vault and enforces grants, and an egress allow-list for
/// everything else.
///
/// The sandbox speaking is known by the socket its connection arrived on, never from
/// anything it sends. `attach` binds a sandbox's socket; `run()` serves every attached socket
/// until it is cancelled, then closes them all.
public final class Gateway: Sendable {
    public struct Configuration: Sendable {
        /// Where mirrors (for fast-forward checks) and spooled pushes live, e.g.
        /// `$STATE/gateway`.
        public var workDirectory: URL
        /// The socket's file name inside each sandbox's gateway directory.
        public var socketName = "gateway.sock"
        /// Connections one sandbox may hold at once; more are closed at once.
        public var maxConnectionsPerSandbox = 64
        /// Time allowed for a request head to arrive, counted from the end of the previous
        /// exchange (or the connection's start).
        public var headerTimeout: Duration = .seconds(30)
        /// A connection with no bytes either way for this long is closed.
        public var idleTimeout: Duration = .seconds(300)
        public var maxHeadBytes = 64 * 1024
        /// Largest upload-pack request body (wants and haves), held in memory.
        public var maxFetchRequestBytes: Int64 = 64 << 20
        /// Largest push, spooled to disk before it is checked and forwarded.
        public var maxPushBytes: Int64 = 2 << 30
        /// TLS settings for upstream git hosts (a private CA, say); nil uses the system's.
        public var upstreamTLS: TLSConfiguration?
        public var upstreamConnectTimeout: Duration = .seconds(10)
        /// The git the fast-forward checks run.
        public var gitExecutable = "/usr/bin/git"
        /// Which internal addresses may be dialled, and for whom (corral.toml `[gateway]
        /// private_hosts`). Applies to every connection the gateway makes.
        public var dialPolicy = DialPolicy()
        /// Branches tenants may push besides their sandboxes' own (corral.toml
        /// `[gateway.push_branches]`). Checked at provisioning and again on every push.
        public var pushBranches = PushBranchRules()

        public init(workDirectory: URL) {
            self.workDirectory = workDirectory
        }
    }

    let core: GatewayCore
    private let state = Mutex(State())

    private struct State {
        var sockets: [SandboxID: GatewaySocket] = [:]
        /// Sandboxes whose socket is being bound.
        var binding: Set<SandboxID> = []
        var phase = Phase.idle

        enum Phase {
            case idle
            case running(AsyncStream<GatewaySocket>.Continuation)
            case stopped
        }
    }

    public init(
        configuration: Configuration, vault: Vault, eventSink: (any GatewayEventSink)? = nil,
        logger: Logger = Logger(label: "corral.gateway"),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        core = GatewayCore(
            configuration: configuration, vault: vault, eventSink: eventSink, logger: logger,
            eventLoopGroup: eventLoopGroup)
    }

    /// Serves every attached sandbox until the task is cancelled; then closes every socket
    /// and connection and removes the socket files. Runs once.
    public func run() async throws {
        let (stream, continuation) = AsyncStream.makeStream(of: GatewaySocket.self)
        let pending = try state.withLock { state -> [GatewaySocket] in
            guard case .idle = state.phase else {
                throw CorralError(.conflict, "the gateway is already running, or has stopped")
            }
            state.phase = .running(continuation)
            return Array(state.sockets.values)
        }
        for socket in pending { continuation.yield(socket) }
        // Spooled pushes left by a gateway that died mid-push.
        try? FileManager.default.removeItem(at: core.mirrors.spoolRoot)
        core.logger.info("gateway running", metadata: ["sandboxes": "\(pending.count)"])
        await withTaskCancellationHandler {
            await withDiscardingTaskGroup { group in
                for await socket in stream {
                    group.addTask { [core] in await socket.serve(core: core) }
                }
            }
        } onCancel: {
            continuation.finish()
            for socket in state.withLock({ Array($0.sockets.values) }) { socket.close() }
        }
        let remaining = state.withLock { state -> [GatewaySocket] in
            state.phase = .stopped
            defer { state.sockets.removeAll() }
            return Array(state.sockets.values)
        }
        for socket in remaining { socket.close() }
        core.shutdown()
        core.logger.info("gateway stopped")
    }

    /// Binds `gateway.sock` in `directory` (the sandbox's own gateway directory, which the
    /// sandbox sees at `/.corral/gateway`) and serves it under `policy`. The socket is
    /// connectable by any user (mode 0666), as the sandbox's user is not the host's; the
    /// directory's own mode and mount decide who can reach it.
    public func attach(
        sandbox: SandboxID, tenant: TenantID, session: SessionID?, directory: URL, policy: GatewayPolicy
    ) async throws {
        let binding = SandboxBinding(sandbox: sandbox, tenant: tenant, session: session, policy: policy)
        let path = directory.appendingPathComponent(core.configuration.socketName).path
        let reserved = state.withLock { state -> Bool in
            if case .stopped = state.phase { return false }
            guard state.sockets[sandbox] == nil, !state.binding.contains(sandbox) else { return false }
            state.binding.insert(sandbox)
            return true
        }
        guard reserved else {
            throw CorralError(
                .alreadyExists, "sandbox \(sandbox) is already attached to the gateway, or the gateway has stopped")
        }
        let socket: GatewaySocket
        do {
            socket = try await GatewaySocket.bind(path: path, binding: binding, core: core)
        } catch {
            state.withLock { _ = $0.binding.remove(sandbox) }
            throw error
        }
        let accepted = state.withLock { state -> Bool in
            state.binding.remove(sandbox)
            switch state.phase {
            case .stopped:
                return false
            case .idle:
                state.sockets[sandbox] = socket
            case .running(let continuation):
                state.sockets[sandbox] = socket
                continuation.yield(socket)
            }
            return true
        }
        guard accepted else {
            socket.close()
            throw CorralError(.cancelled, "the gateway stopped while sandbox \(sandbox) was being attached")
        }
        core.logger.info(
            "gateway attached",
            metadata: [
                "sandbox": "\(sandbox)", "tenant": "\(tenant)", "session": "\(session.map(\.rawValue) ?? "-")",
                "grants": "\(policy.gitGrants.count)", "egress_hosts": "\(policy.egressHosts.count)",
            ])
    }

    /// Closes the sandbox's socket and every connection on it, and removes the socket file.
    public func detach(sandbox: SandboxID) {
        let socket = state.withLock { $0.sockets.removeValue(forKey: sandbox) }
        guard let socket else { return }
        socket.close()
        core.logger.info("gateway detached", metadata: ["sandbox": "\(sandbox)"])
    }

    /// Replaces a sandbox's policy; requests already forwarded finish under the old one.
    public func updatePolicy(_ policy: GatewayPolicy, for sandbox: SandboxID) throws {
        guard let socket = state.withLock({ $0.sockets[sandbox] }) else {
            throw CorralError.notFound("sandbox \(sandbox) is not attached to the gateway")
        }
        socket.binding.setPolicy(policy)
    }

    /// Refuses, before anything is made or cloned, what this gateway would refuse `tenant`
    /// anyway, each with a `CorralError` (`.permissionDenied`) that names the rule:
    ///
    /// - a write grant whose pushable branches the operator's `push_branches` does not allow
    ///   the tenant (a grant without branches, or `sandbox` with its own, is fine);
    /// - a granted repository whose host resolves to an address the tenant may not dial
    ///   (`DialPolicy`); nothing is connected to, so a tenant cannot probe the host's ports;
    /// - for a network tenant, an egress entry that is itself an internal address.
    ///
    /// `sandbox` is nil while the sandbox's id is not known yet.
    public func admit(tenant: TenantID, sandbox: SandboxID?, policy: GatewayPolicy) async throws {
        let configuration = core.configuration
        for grant in policy.gitGrants where grant.access == .write {
            for branch in grant.pushableBranches ?? [] {
                try configuration.pushBranches.check(tenant: tenant, branch: branch, sandbox: sandbox)
            }
        }
        for entry in policy.egressHosts {
            try configuration.dialPolicy.checkEgressEntry(entry, tenant: tenant)
        }
        for repository in Set(policy.gitGrants.map(\.repository)) {
            let (host, port) = repository.upstreamHostAndPort
            do {
                _ = try await configuration.dialPolicy.resolve(host: host, port: port, tenant: tenant)
            } catch let error as CorralError where error.code == .permissionDenied {
                throw CorralError(.permissionDenied, "repository \(repository) is refused: \(error.message)")
            } catch let error as CorralError where error.code == .unavailable {
                // Not resolving is not a refusal: the clone says so in its own words, and a
                // name may resolve a moment later.
                continue
            }
        }
    }

    /// The sandboxes with a socket, in id order.
    public var attachedSandboxes: [SandboxID] {
        state.withLock { $0.sockets.keys.sorted() }
    }
}

/// Who a socket belongs to and what it may do.
final class SandboxBinding: Sendable {
    let sandbox: SandboxID
    let tenant: TenantID
    let session: SessionID?
    private let currentPolicy: Mutex<GatewayPolicy>

    init(sandbox: SandboxID, tenant: TenantID, session: SessionID?, policy: GatewayPolicy) {
        self.sandbox = sandbox
        self.tenant = tenant
        self.session = session
        self.currentPolicy = Mutex(policy)
    }

    var policy: GatewayPolicy { currentPolicy.withLock { $0 } }
    func setPolicy(_ policy: GatewayPolicy) { currentPolicy.withLock { $0 = policy } }
}

/// What every connection shares: configuration, vault, upstream clients, mirrors, logging.
final class GatewayCore: Sendable {
    let configuration: Gateway.Configuration
    let vault: Vault
    let eventSink: (any GatewayEventSink)?
    let logger: Logger
    let eventLoopGroup: any EventLoopGroup
    let upstreams: UpstreamClients
    let mirrors: GitMirrors

    init(
        configuration: Gateway.Configuration, vault: Vault, eventSink: (any GatewayEventSink)?, logger: Logger,
        eventLoopGroup: any EventLoopGroup
    ) {
        self.configuration = configuration
        self.vault = vault
        self.eventSink = eventSink
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
        self.upstreams = UpstreamClients(configuration: configuration, logger: logger)
        self.mirrors = GitMirrors(configuration: configuration, logger: logger)
    }

    /// Logs one line for the decision and hands it to the sink.
    func record(_ decision: GatewayDecision, for binding: SandboxBinding) async {
        var metadata: Logger.Metadata = [
            "sandbox": "\(binding.sandbox)", "tenant": "\(binding.tenant)", "action": "\(decision.action.rawValue)",
            "verdict": "\(decision.verdict.rawValue)", "target": "\(decision.target)", "reason": "\(decision.reason)",
        ]
        if let session = binding.session { metadata["session"] = "\(session)" }
        if let credential = decision.credential { metadata["credential"] = "\(credential)" }
        logger.info("gateway decision", metadata: metadata)
        await eventSink?.record(decision, sandbox: binding.sandbox, session: binding.session)
    }

    func shutdown() {
        upstreams.shutdown()
    }
}
