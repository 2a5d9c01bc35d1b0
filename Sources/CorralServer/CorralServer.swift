import CorralAPI
import CorralCore
import CorralFleet
import CorralHost
import CorralLink
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
    /// The engine host's routes (CorralHost), which this server serves with its own additions
    /// (`api`); a worker's link serves them as they are.
    public let host: HostAPI
    /// The console's logins, summaries and charts, shared by both listeners.
    let console: ConsoleState
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
        let quotas = QuotaGate(
            locks: sessions.flatMap(SessionStoreSelection.sharedLocks),
            tallies: sessions.flatMap(SessionStoreSelection.sandboxTallies),
            replica: replica, freshWithin: configuration.runLeaseTTL,
            published: { tenant in try await provisioner.list(tenant: tenant).count })
        self.workers = HarnessWorkers(
            logger: logger, leases: sessions.flatMap(SessionStoreSelection.runLeases), owner: Self.replicaName(),
            leaseTTL: configuration.runLeaseTTL)
        var limits = HostAPI.Limits()
        limits.maxArchiveBytes = configuration.maxArchiveBytes
        limits.maxFileBytes = configuration.maxFileBytes
        limits.stateDirectory = configuration.stateDirectory
        limits.headerTimeout = configuration.headerTimeout
        limits.idleTimeout = configuration.idleTimeout
        limits.maxHeadBytes = configuration.maxHeadBytes
        limits.sandboxesPerTenant = configuration.sandboxesPerTenant
        self.quotas = quotas
        self.host = HostAPI(
            provisioner: runner.provisioner, pools: runner.pools, limits: limits, metrics: metrics, quotas: quotas,
            logger: logger)
        self.console = ConsoleState(configuration: configuration)
        self.logger = logger
    }

    var provisioner: Provisioner { runner.provisioner }
    var serverMetrics: ServerMetrics { host.serverMetrics }
    var activity: ServerActivity { host.activity }
    var liveCommands: LiveCommands { host.liveCommands }
    /// The host's routes with this server's quotas, sessions, tenants and placement around them.
    var api: HostAPI { host.with(control: self) }

    /// What one listener serves: the API, E2B's API (docs/e2b.md) and, unless it is turned off, the
    /// console's pages.
    public func listenerRouter(auth: AuthMode) -> Router<CorralRequestContext> {
        let router = router(auth: auth)
        if configuration.console.enabled { addConsoleRoutes(to: router, auth: auth) }
        let api = self.api
        // On a control plane with workers, the calls for their sandboxes go to them (added
        // before E2B's routes, so that it runs ahead of them).
        if let fleet, !auth.isControlPlane {
            router.add(
                middleware: E2BWorkerRouting(fleet: fleet, control: E2BControlPlane(host: api, auth: auth)))
        }
        api.addE2BRoutes(to: router, auth: auth)
        return router
    }

    /// The API's router for one listener (`/v1`, `/metrics`): what docs/openapi.yaml describes.
    public func router(auth: AuthMode) -> Router<CorralRequestContext> {
        let router = Router(context: CorralRequestContext.self)
        let api = self.api
        api.addBase(to: router, auth: auth)
        let v1 = api.v1(router, auth: auth)
        if let fleet, !auth.isControlPlane { v1.add(middleware: WorkerRoutingMiddleware(fleet: fleet, server: self)) }
        api.addSandboxAPI(to: v1)
        addSessionRoutes(to: v1)
        addAgentRoutes(to: v1)
        addTenantRoutes(to: v1)
        addWorkerRoutes(to: v1)
        return router
    }

    public typealias AuthMode = HostAPI.AuthMode

    /// What a worker serves on its link (`HostAPI.workerRouter`): this host's routes, without
    /// the control plane's.
    public func workerRouter(
        currentEpoch: @escaping @Sendable () -> Int64?, status: @escaping @Sendable () async -> WorkerStatus,
        replicas: @escaping @Sendable (WorkerReplicas) async -> WorkerReplicas = { $0 }
    ) -> Router<CorralRequestContext> {
        host.workerRouter(currentEpoch: currentEpoch, status: status, replicas: replicas)
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
            router: listenerRouter(auth: auth), server: host.httpServer(),
            configuration: .init(address: address, serverName: "corral"), onServerRunning: onServerRunning,
            logger: logger)
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
