import CorralAPI
import CorralCore
import CorralFleet
import CorralSandbox
import CorralService
import CorralSession
import DockerEngine
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import Synchronization

/// corrald: the HTTP API over the long-running service. The same router serves two
/// listeners: a unix socket in the state directory, where every request is the local
/// tenant's (the command line uses it), and TCP with tenant bearer tokens.
public struct CorralServer: Sendable {
    public struct Configuration: Sendable {
        /// The unix socket the local command line finds (`$STATE/corral.sock`); nil: none.
        public var socketPath: String?
        /// `host:port` for tenants with tokens; nil: no TCP listener.
        public var listen: String?
        /// Most sandboxes one tenant may hold at once.
        public var sandboxesPerTenant = 20
        /// Most sessions one tenant may hold.
        public var sessionsPerTenant = 1000
        /// Largest tar a request may send into a sandbox.
        public var maxArchiveBytes: Int64 = 1 << 30
        /// Largest append request: one event may take 4 MiB, and a batch several.
        public var maxAppendBytes = 16 << 20
        /// Largest single file through the files route.
        public var maxFileBytes = 8 << 20
        /// The state directory, named in no error a client sees.
        public var stateDirectory: String?
        /// How often an idle event stream sends a comment, so that a client that left is noticed.
        public var streamKeepAlive: Duration = .seconds(15)
        /// A request head must arrive whole within this time (`[server] header_timeout`).
        public var headerTimeout: Duration = .seconds(30)
        /// A keep-alive connection with no request under way is closed after this time
        /// (`[server] idle_timeout`). A response being sent (an event stream, a long exec) is
        /// not idle.
        public var idleTimeout: Duration = .seconds(60)
        /// The largest request head; a larger one gets 431. Below the HTTP decoder's own limit
        /// (80 KiB), so that the client always gets the JSON answer.
        public var maxHeadBytes = 64 << 10
        /// How long a graceful shutdown waits for requests under way before it cancels them
        /// (`[server] shutdown_timeout`): a stop always completes.
        public var shutdownTimeout: Duration = .seconds(30)
        /// Stop once idle this long (no request under way, no harness run): the host agent
        /// the command line starts on demand. Nil: run until stopped.
        public var idleExit: Duration?
        /// The web console at `/console` (docs/console.md).
        public var console = ConsoleSettings()
        /// Where workers dial in (`[workers] listen`); nil: this service has no workers but its own.
        public var workers: WorkerListener.Settings?
        /// How long a harness run's lease lasts without renewal, with the PostgreSQL store
        /// (`[store] run_lease`): a replica that dies has its runs taken over by another once
        /// this has passed.
        public var runLeaseTTL: Duration = .seconds(30)

        public init(socketPath: String? = nil, listen: String? = nil) {
            self.socketPath = socketPath
            self.listen = listen
        }
    }

    public let configuration: Configuration
    public let runner: CorralServiceRunner
    public let tenants: TenantRegistry
    public let sessions: (any SessionStore)?
    public let metrics: PrometheusCollectorRegistry
    /// Where brain keys and endpoints come from (ANTHROPIC_API_KEY, OPENAI_BASE_URL, ...); a
    /// key not set here comes from the runner's vault.
    public let brainEnvironment: [String: String]
    let quotas: QuotaGate
    let workers: HarnessWorkers
    let serverMetrics: ServerMetrics
    let activity = ServerActivity()
    /// The console's logins, summaries and charts, shared by both listeners.
    let console: ConsoleState
    /// Commands this server started and still follows, for their stdin and resizes.
    let liveCommands = LiveCommands()
    /// The workers dialled in, when `configuration.workers` is set.
    public let fleet: WorkerFleet?
    let logger: Logger

    public init(
        configuration: Configuration, runner: CorralServiceRunner, tenants: TenantRegistry,
        sessions: (any SessionStore)?,
        metrics: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
        brainEnvironment: [String: String] = ProcessInfo.processInfo.environment,
        logger: Logger = Logger(label: "corral.server")
    ) {
        self.configuration = configuration
        self.runner = runner
        self.tenants = tenants
        self.sessions = sessions
        self.metrics = metrics
        self.brainEnvironment = brainEnvironment
        // One name per server, so that two in one process (tests) count apart too.
        let replica = "\(Self.replicaName())-\(UUID().uuidString.prefix(8).lowercased())"
        let fleet = configuration.workers.map { settings in
            WorkerFleet(settings: settings.fleet, logger: logger, replica: replica) { [tenants] tenant in
                tenant == .local
                    ? [WorkerGroup.defaultName]
                    : (try? await tenants.placementGroups(of: tenant)) ?? [WorkerGroup.defaultName]
            }
        }
        self.fleet = fleet
        let provisioner = runner.provisioner
        self.quotas = QuotaGate(
            locks: sessions.flatMap(SessionStoreSelection.sharedLocks),
            tallies: sessions.flatMap(SessionStoreSelection.sandboxTallies),
            replica: replica, freshWithin: configuration.runLeaseTTL,
            published: { tenant in try await provisioner.list(tenant: tenant).count })
        self.workers = HarnessWorkers(
            logger: logger, leases: sessions.flatMap(SessionStoreSelection.runLeases), owner: Self.replicaName(),
            leaseTTL: configuration.runLeaseTTL)
        self.serverMetrics = ServerMetrics(factory: PrometheusMetricsFactory(registry: metrics))
        self.console = ConsoleState(configuration: configuration)
        self.logger = logger
    }

    var provisioner: Provisioner { runner.provisioner }

    /// What one listener serves: the API, E2B's API (docs/e2b.md) and, unless it is turned off, the
    /// console's pages.
    public func listenerRouter(auth: AuthMode) -> Router<CorralRequestContext> {
        let router = router(auth: auth)
        if configuration.console.enabled { addConsoleRoutes(to: router, auth: auth) }
        addE2BRoutes(to: router, auth: auth)
        return router
    }

    /// The API's router for one listener (`/v1`, `/metrics`): what docs/openapi.yaml describes.
    public func router(auth: AuthMode) -> Router<CorralRequestContext> {
        let router = Router(context: CorralRequestContext.self)
        router.add(middleware: ActivityMiddleware(activity: activity))
        router.add(middleware: MetricsMiddleware(factory: serverMetrics.factory))
        router.add(
            middleware: ErrorMiddleware(
                metrics: serverMetrics,
                redactions: configuration.stateDirectory.map { [($0, "$STATE")] } ?? []))
        // A worker's link serves the sandboxes, not the control plane's business.
        if case .controlPlane(let epoch) = auth { router.add(middleware: WorkerLinkScope(currentEpoch: epoch)) }
        addHealthRoutes(to: router)
        let v1 = router.group("v1").add(middleware: AuthMiddleware(mode: auth.middlewareMode(tenants)))
        if let fleet, !auth.isControlPlane { v1.add(middleware: WorkerRoutingMiddleware(fleet: fleet, server: self)) }
        addSandboxRoutes(to: v1)
        addCommandRoutes(to: v1)
        addFileRoutes(to: v1)
        addSessionRoutes(to: v1)
        addAgentRoutes(to: v1)
        addPoolRoutes(to: v1)
        addTenantRoutes(to: v1)
        addWorkerRoutes(to: v1)
        return router
    }

    public enum AuthMode: Sendable {
        /// Every request is the local tenant's: the unix socket in the state directory.
        case local
        /// Bearer tokens name the tenant: TCP.
        case tokens
        /// The control plane names the tenant: a worker's link (`WorkerAgent`), for its epoch.
        case controlPlane(currentEpoch: @Sendable () -> Int64?)

        func middlewareMode(_ registry: TenantRegistry) -> AuthMiddleware.Mode {
            switch self {
            case .local: .local
            case .tokens: .tokens(registry)
            case .controlPlane(let epoch): .controlPlane(currentEpoch: epoch)
            }
        }

        var isControlPlane: Bool {
            if case .controlPlane = self { return true }
            return false
        }
    }

    /// What a worker serves on its link: the API as the control plane's calls need it, and the
    /// heartbeat's status.
    public func workerRouter(
        currentEpoch: @escaping @Sendable () -> Int64?, status: @escaping @Sendable () async -> WorkerStatus,
        replicas: @escaping @Sendable (WorkerReplicas) async -> WorkerReplicas = { $0 }
    ) -> Router<CorralRequestContext> {
        let router = router(auth: .controlPlane(currentEpoch: currentEpoch))
        router.group("v1/worker").add(middleware: AuthMiddleware(mode: .controlPlane(currentEpoch: currentEpoch)))
            .get("status") { _, _ -> Response in
                JSONResponse.make(await status())
            }
            .put("replicas") { request, context -> Response in
                let body = try await decodeJSON(WorkerReplicas.self, from: request, context: context)
                return JSONResponse.make(await replicas(body))
            }
            .put("pools") { [runner] request, context -> Response in
                let body = try await decodeJSON(WorkerPoolTargets.self, from: request, context: context)
                return JSONResponse.make(try await Self.setPoolTargets(body, pools: runner.pools))
            }
        // E2B's API for the sandboxes placed here (docs/e2b.md): the control plane checked the
        // API key, and forwards envd's calls for them with the sandbox's access token.
        addE2BRoutes(to: router, auth: .controlPlane(currentEpoch: currentEpoch))
        return router
    }

    /// A worker's pools take the targets its control plane set; a pool the control plane does
    /// not name goes back to its template's `min_idle`. Answers the pools as they are now.
    static func setPoolTargets(_ body: WorkerPoolTargets, pools: [WarmPool]) async throws -> [WorkerPoolStatus] {
        var wanted: [String: Int] = [:]
        for target in body.targets {
            guard target.minIdle >= 0, wanted.updateValue(target.minIdle, forKey: target.template) == nil else {
                throw CorralError.invalidArgument(
                    "pool target for '\(target.template)' is negative or given twice",
                    hint: "one per template, 0 or more")
            }
        }
        var statuses: [WorkerPoolStatus] = []
        for pool in pools {
            await pool.setTarget(minIdle: wanted[pool.template.name.rawValue])
            statuses.append(WorkerPoolStatus(await pool.currentStatus()))
        }
        return statuses
    }

    /// The HTTP listeners as services, to run beside the runner's.
    public func applications(onReady: @escaping @Sendable (String) async -> Void = { _ in }) throws -> [any Service] {
        var services: [any Service] = []
        if let socketPath = configuration.socketPath {
            try Self.prepareSocketPath(socketPath)
            services.append(
                listener(auth: .local, address: .unixDomainSocket(path: socketPath)) { _ in
                    chmod(socketPath, 0o600)
                    await onReady("unix://\(socketPath)")
                })
        }
        if let workers = workerListener(onReady: { await onReady("workers \($0)") }) { services.append(workers) }
        if let listen = configuration.listen {
            let (host, port) = try ListenAddress.parse(listen)
            services.append(
                listener(auth: .tokens, address: .hostname(host, port: port)) { channel in
                    let actual = channel.localAddress?.port ?? port
                    await onReady("http://\(host):\(actual)")
                })
        }
        return services
    }

    /// Where workers dial in, when `configuration.workers` is set; `onReady` gets its URL.
    public func workerListener(onReady: @escaping @Sendable (String) async -> Void) -> WorkerListener? {
        guard let workers = configuration.workers, let fleet else { return nil }
        let state = URL(fileURLWithPath: configuration.stateDirectory ?? ".")
        // Beside the tenants: in the PostgreSQL store when sessions are there.
        let tokens = sessions.map { WorkerTokenRegistry(store: $0, stateDirectory: state) }
        // Replicas over one PostgreSQL store find each other there, and tell their workers.
        let directory = SessionStoreSelection.sharedRecordList("replicas", store: sessions).map {
            ReplicaDirectory(list: $0, freshWithin: workers.fleet.grace)
        }
        return WorkerListener(
            settings: workers, fleet: fleet, tokens: tokens ?? WorkerTokenRegistry(stateDirectory: state),
            directory: directory, logger: logger, onReady: onReady)
    }

    /// One listener: the router for `auth` behind the connection limits every listener has
    /// (head deadline, head size, idle timeout). The unix socket and TCP are set up here alike.
    public func listener(
        auth: AuthMode, address: BindAddress,
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    ) -> some Service {
        Application(
            router: listenerRouter(auth: auth), server: httpServer(),
            configuration: .init(address: address, serverName: "corral"), onServerRunning: onServerRunning,
            logger: logger)
    }

    /// HTTP/1.1 with the connection guard ahead of the decoder and Hummingbird's idle timeout.
    func httpServer() -> HTTPServerBuilder {
        let limits = ConnectionLimits(
            headerTimeout: configuration.headerTimeout, maxHeadBytes: configuration.maxHeadBytes)
        let idle = TimeAmount.milliseconds(Int64(configuration.idleTimeout.milliseconds.rounded(.up)))
        return HTTPServerBuilder { responder in
            GuardedHTTP1Channel(
                http1: HTTP1Channel(
                    responder: responder,
                    configuration: .init(additionalChannelHandlers: [RequestBoundaryObserver()], idleTimeout: idle)),
                limits: limits)
        }
    }

    /// Runs the pools, the reaper, the gateway and the listeners until SIGTERM or SIGINT,
    /// then shuts down gracefully: listeners stop accepting and drain their requests first.
    public func run(
        handleSignals: Bool = true, extraServices: [any Service] = [],
        onReady: @escaping @Sendable (String) async -> Void = { _ in }
    ) async throws {
        // A worker's link (extraServices) stops with the listeners, before the pools.
        var listeners = try applications(onReady: onReady) + extraServices
        if let after = configuration.idleExit {
            // Last in the list, so that a graceful shutdown stops it first.
            listeners.append(
                IdleExitService(
                    after: after, activity: activity, workers: workers, socketPath: configuration.socketPath,
                    logger: logger))
        }
        var groupConfiguration = ServiceGroupConfiguration(
            // A graceful shutdown stops services in reverse order: first the listeners
            // (they drain their requests), then the harness runs (sessions stay
            // resumable), then the pools, the reaper and the gateway.
            services: (runner.services + [
                HarnessWorkersService(workers: workers), RunTakeoverService(server: self),
                SandboxTallyService(server: self),
            ]
                + consoleServices + listeners).map {
                    .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup)
                },
            gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [],
            logger: logger)
        // A request that never ends (a command without a timeout) must not hold the stop up
        // for ever: past the grace, what is left is cancelled, and commands with it.
        groupConfiguration.maximumGracefulShutdownDuration = configuration.shutdownTimeout
        try await ServiceGroup(configuration: groupConfiguration).run()
    }

    /// A stale socket from a crashed service is removed; a live one means a service runs
    /// already.
    static func prepareSocketPath(_ path: String) throws {
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try lockSocketPath(path)
        guard FileManager.default.fileExists(atPath: path) else { return }
        let connected = UnixSocketPath.accepts(path)
        if connected {
            throw CorralError(
                .alreadyExists, "a corral service already answers on \(path)",
                hint: "stop it first, or use another --state-dir")
        }
        unlink(path)
    }

    /// Locks held on socket paths by this process, kept until it exits (the kernel lets go
    /// of them then, whatever the exit).
    private static let socketLocks = Mutex<[String: Int32]>([:])

    /// Takes `PATH.lock` for this process: two services starting at once on one state
    /// directory (host agents started by racing commands) both found no live socket, and
    /// both bound one. A process that holds the lock already (a restart in-process) keeps it.
    static func lockSocketPath(_ path: String) throws {
        try socketLocks.withLock { locks in
            guard locks[path] == nil else { return }
            let descriptor = open(path + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else {
                throw CorralError(.io, "cannot open \(path).lock: \(String(cString: strerror(errno)))")
            }
            guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
                close(descriptor)
                throw CorralError(
                    .alreadyExists, "a corral service already serves \(path)",
                    hint: "stop it first, or use another --state-dir")
            }
            locks[path] = descriptor
        }
    }
}

/// Keeps concurrent creates of one tenant from racing past its quota together. Quotas bound
/// the tenants that come with tokens: the operator on the host's unix socket (`local`), who
/// could drive the engine directly anyway, is not held to them, and its creates skip the count
/// (a listing of every container, a few milliseconds of each warm create).
///
/// With a store that replicas share (PostgreSQL: `locks` and `tallies`), a count and its
/// create run under a lock per tenant and kind that every replica takes, so that the quota
/// holds across them. Sessions are counted in the store itself. Sandboxes are counted where
/// they run: on this replica's engine, on every worker (each asked for its own count under
/// the lock, `WorkerFleet.liveCount`: workers keep a link to every replica), and on the other
/// replicas' engines, by the counts they publish (`SandboxTallies`, fresh within
/// `freshWithin`; `published`). This replica publishes before it lets the lock go, and
/// `SandboxTallyService` refreshes.
actor QuotaGate {
    /// What a quota counts.
    enum Kind: String, Sendable {
        case sandboxes, sessions
    }

    private struct Key: Hashable {
        var tenant: TenantID
        var kind: Kind
    }

    private var pending: [Key: Int] = [:]
    let locks: (any SharedLocks)?
    let tallies: (any SandboxTallies)?
    let replica: String
    let freshWithin: Duration
    /// The count of a tenant's sandboxes this replica publishes for the others.
    let published: @Sendable (TenantID) async throws -> Int

    init(
        locks: (any SharedLocks)? = nil, tallies: (any SandboxTallies)? = nil, replica: String = "local",
        freshWithin: Duration = .seconds(30), published: @escaping @Sendable (TenantID) async throws -> Int = { _ in 0 }
    ) {
        self.locks = locks
        self.tallies = tallies
        self.replica = replica
        self.freshWithin = freshWithin
        self.published = published
    }

    /// Runs `body` when `current() + pending < limit` (plus, for sandboxes across replicas,
    /// the other replicas' counts), counting it as pending meanwhile.
    func admit<T: Sendable>(
        _ tenant: TenantID, limit: Int, what kind: Kind, current: () async throws -> Int,
        _ body: @Sendable () async throws -> T
    ) async throws -> T {
        if tenant == .local { return try await body() }
        let key = Key(tenant: tenant, kind: kind)
        guard let locks, kind == .sessions || tallies != nil else {
            return try await admitHere(key, limit: limit, current: current, body)
        }
        return try await locks.withLock("corral-quota:\(tenant):\(kind.rawValue)", isolation: self) {
            guard kind == .sandboxes, let tallies else {
                return try await admitHere(key, limit: limit, current: current, body)
            }
            let others = try await tallies.othersCount(tenant: tenant, excluding: replica, freshWithin: freshWithin)
            let made = try await admitHere(key, limit: limit, current: { try await current() + others }, body)
            // Before the lock goes: the next replica to count sees this one's new sandbox (a
            // refusal changed nothing).
            await publish(tenant)
            return made
        }
    }

    /// Publishes this replica's count of `tenant`'s sandboxes (`published`) for the other
    /// replicas, after a create or a removal; a count that could not be taken or published
    /// waits for the next refresh.
    func publish(_ tenant: TenantID) async {
        guard let tallies, tenant != .local, let count = try? await published(tenant) else { return }
        try? await tallies.publish(replica: replica, tenant: tenant, count: count)
    }

    private func admitHere<T: Sendable>(
        _ key: Key, limit: Int, current: () async throws -> Int, _ body: @Sendable () async throws -> T
    ) async throws -> T {
        let inFlight = pending[key, default: 0]
        pending[key] = inFlight + 1
        defer { pending[key, default: 1] -= 1 }
        let existing = try await current()
        // Re-read after the await: other admissions may have started meanwhile.
        guard existing + pending[key, default: 1] - 1 < limit else {
            throw CorralError(
                .quotaExceeded, "tenant '\(key.tenant)' has reached its quota of \(limit) \(key.kind.rawValue)",
                hint: "remove some first, or raise the limit in corral.toml ([limits])")
        }
        return try await body()
    }
}
