import CorralCore
import CorralGateway
import CorralSandbox
import CorralSession
import DockerEngine
import Foundation
import Logging
import ServiceLifecycle

/// The long-running service behind `corral serve` (later `corrald`): the gateway, one warm
/// pool per template with a pool, and the reaper, run as a list of services until SIGTERM or
/// SIGINT. The HTTP API joins the same list.
///
/// Its provisioner is the one to provision and remove through: it attaches every sandbox to
/// the gateway (grants, egress hosts), clones its repository, and detaches on removal; the
/// reaper detaches what it removes.
public struct CorralServiceRunner: Sendable {
    public let configuration: CorralConfiguration
    public let provisioner: Provisioner
    public let pools: [WarmPool]
    public let reaper: SandboxReaper
    /// Every sandbox's socket, served while the service runs; nil when the environment has no
    /// state directory (then requests that need it are refused).
    public let gateway: Gateway?
    /// Where the gateway takes credentials from.
    public let vault: Vault?
    /// Everything `run()` runs, in order.
    public let services: [any Service]
    let logger: Logger

    /// Checks the templates against the engine and builds the services. A template naming an
    /// image the engine lacks, or a runtime it has not registered, is refused here, with an
    /// error that names the template. When the engine does not answer, the service starts
    /// anyway: its pools report themselves degraded and recover once it is back.
    ///
    /// The gateway's vault is `vault`, else the state directory's (`$STATE/vault.sealed`, its
    /// key from `CORRAL_VAULT_KEY` or `$STATE/vault.key`; a key file others can read is
    /// refused here). With `sessions`, the decisions for a sandbox that belongs to a session
    /// are appended to it as `gateway.decision` events. With `poolEveryTemplate` (a worker),
    /// every template has a pool, so that a target pushed by the control plane can fill it.
    public static func prepare(
        configuration: CorralConfiguration, engine: DockerEngineClient, environment: SandboxEnvironment,
        sessions: (any SessionStore)? = nil, vault: Vault? = nil, timer: ServiceTimer = .system,
        poolEveryTemplate: Bool = false, logger: Logger = Logger(label: "corral.service")
    ) async throws -> CorralServiceRunner {
        for template in configuration.templates { _ = try template.validated() }
        do {
            try await checkTemplates(configuration.templates, engine: engine)
        } catch let error as CorralError where error.code == .unavailable {
            logger.info("the engine does not answer; pools start degraded", metadata: ["error": "\(error)"])
        }
        var gateway: Gateway?
        var gatewayVault: Vault?
        if let sandboxes = environment.sandboxesDirectory {
            let state = sandboxes.deletingLastPathComponent()
            let opened: Vault
            if let vault {
                opened = vault
            } else {
                opened = try await Vault(
                    configuration: Vault.Configuration(stateDirectory: state),
                    storage: SessionStoreSelection.vaultStorage(sessions))
            }
            if case .created(let file) = opened.keyOrigin {
                logger.info("made a new vault key (mode 0600); keep it safe", metadata: ["file": "\(file.path)"])
            }
            gatewayVault = opened
            var gatewayConfiguration = Gateway.Configuration(
                workDirectory: state.appendingPathComponent("gateway", isDirectory: true))
            gatewayConfiguration.dialPolicy = configuration.gateway.dialPolicy
            gatewayConfiguration.pushBranches = configuration.gateway.pushBranches
            gateway = Gateway(
                configuration: gatewayConfiguration,
                vault: opened, eventSink: sessions.map { SessionGatewayEvents(store: $0, logger: logger) },
                logger: logger)
        }
        var provisionerConfiguration = Provisioner.Configuration(
            environment: environment, templates: configuration.templates, gateway: gateway)
        provisionerConfiguration.claimGrace = configuration.service.claimGrace
        let provisioner = Provisioner(engine: engine, configuration: provisionerConfiguration, logger: logger)
        _ = try provisioner.instanceID()
        var poolConfiguration = WarmPool.Configuration()
        poolConfiguration.checkInterval = configuration.service.checkInterval
        poolConfiguration.backoff = configuration.service.backoff
        poolConfiguration.timer = timer
        poolConfiguration.statusDirectory = environment.sandboxesDirectory.map(Self.statusDirectory(sandboxes:))
        // A worker keeps a pool of every template, empty until its control plane sets a target.
        let pools = configuration.templates.filter { poolEveryTemplate || $0.pool.minIdle > 0 }.map {
            WarmPool(template: $0, provisioner: provisioner, configuration: poolConfiguration, logger: logger)
        }
        var reaperConfiguration = SandboxReaper.Configuration()
        reaperConfiguration.interval = configuration.service.reapInterval
        reaperConfiguration.timer = timer
        reaperConfiguration.templates = Set(configuration.templates.map(\.name))
        let reaper = SandboxReaper(provisioner: provisioner, configuration: reaperConfiguration, logger: logger)
        var services: [any Service] = []
        if let gateway {
            services.append(
                GatewayService(
                    gateway: gateway, provisioner: provisioner, backoff: configuration.service.backoff, timer: timer,
                    logger: logger))
        }
        services += pools.map(PoolService.init) as [any Service]
        services.append(ReaperService(reaper: reaper))
        return CorralServiceRunner(
            configuration: configuration, provisioner: provisioner, pools: pools, reaper: reaper, gateway: gateway,
            vault: gatewayVault, services: services, logger: logger)
    }

    /// Where pools publish their status: `$STATE/pools`, beside `$STATE/sandboxes`.
    public static func statusDirectory(sandboxes: URL) -> URL {
        sandboxes.deletingLastPathComponent().appendingPathComponent("pools", isDirectory: true)
    }

    /// Runs every service until SIGTERM or SIGINT (a graceful shutdown: pools stop refilling,
    /// idle members stay for the next start to adopt), or until the task is cancelled.
    public func run(handleSignals: Bool = true) async throws {
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services.map {
                    .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup)
                },
                gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [],
                logger: logger))
        try await group.run()
    }

    /// Refuses templates whose image is missing or whose runtime the engine has not registered.
    static func checkTemplates(_ templates: [SandboxTemplate], engine: DockerEngineClient) async throws {
        guard !templates.isEmpty else { return }
        let runtimes = try await engine.info().runtimes
        for template in templates {
            guard runtimes[template.runtime.rawValue] != nil else {
                throw CorralError(
                    .invalidArgument,
                    "template '\(template.name)': runtime '\(template.runtime)' is not registered with the engine (it has \(runtimes.keys.sorted().joined(separator: ", ")))",
                    hint: "register it in the engine's daemon.json (see docs/engine.md), or use runtime = \"runc\"")
            }
            guard try await engine.inspectImage(template.image) != nil else {
                throw CorralError(
                    .notFound, "template '\(template.name)': image '\(template.image)' is not on the engine",
                    hint: template.image == ProvisionRequest.defaultImage
                        ? "build it with `make image`" : "import or build it first (see images/README.md)")
            }
        }
    }
}

/// The gateway as a service: serves every attached socket until graceful shutdown, and first
/// attaches again the sandboxes an earlier run left (their sockets closed with it), retrying
/// with backoff while the engine does not answer.
struct GatewayService: Service, CustomStringConvertible {
    let gateway: Gateway
    let provisioner: Provisioner
    let backoff: Backoff
    let timer: ServiceTimer
    let logger: Logger

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await gateway.run() }
                group.addTask { await reattach() }
                try await group.waitForAll()
            }
        }
    }

    private func reattach() async {
        var failures = 0
        while !Task.isCancelled {
            do {
                try await provisioner.reattachGateways()
                return
            } catch {
                failures += 1
                logger.info(
                    "cannot list sandboxes to attach their gateways again; retrying",
                    metadata: ["failures": "\(failures)", "error": "\(error)"])
            }
            do {
                try await timer.sleep(for: backoff.delay(afterFailures: failures))
            } catch {
                return
            }
        }
    }

    var description: String { "Gateway" }
}

/// A warm pool as a service: cancelled on graceful shutdown.
struct PoolService: Service, CustomStringConvertible {
    let pool: WarmPool

    func run() async throws {
        try await cancelWhenGracefulShutdown { try await pool.run() }
    }

    var description: String { "WarmPool(\(pool.template.name))" }
}

/// The reaper as a service: cancelled on graceful shutdown.
struct ReaperService: Service, CustomStringConvertible {
    let reaper: SandboxReaper

    func run() async throws {
        try await cancelWhenGracefulShutdown { try await reaper.run() }
    }

    var description: String { "SandboxReaper" }
}
