import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import Logging
import ServiceLifecycle

/// The long-running service behind `corral serve` (later `corrald`): one warm pool per
/// template with a pool, and the reaper, run as a list of services until SIGTERM or SIGINT.
/// The gateway and the HTTP API join the same list later.
public struct CorralServiceRunner: Sendable {
    public let configuration: CorralConfiguration
    public let provisioner: Provisioner
    public let pools: [WarmPool]
    public let reaper: SandboxReaper
    /// Everything `run()` runs, in order.
    public let services: [any Service]
    let logger: Logger

    /// Checks the templates against the engine and builds the services. A template naming an
    /// image the engine lacks, or a runtime it has not registered, is refused here, with an
    /// error that names the template. When the engine does not answer, the service starts
    /// anyway: its pools report themselves degraded and recover once it is back.
    public static func prepare(
        configuration: CorralConfiguration, engine: DockerEngineClient, environment: SandboxEnvironment,
        timer: ServiceTimer = .system, logger: Logger = Logger(label: "corral.service")
    ) async throws -> CorralServiceRunner {
        for template in configuration.templates { _ = try template.validated() }
        do {
            try await checkTemplates(configuration.templates, engine: engine)
        } catch let error as CorralError where error.code == .unavailable {
            logger.info("the engine does not answer; pools start degraded", metadata: ["error": "\(error)"])
        }
        var provisionerConfiguration = Provisioner.Configuration(
            environment: environment, templates: configuration.templates)
        provisionerConfiguration.claimGrace = configuration.service.claimGrace
        let provisioner = Provisioner(engine: engine, configuration: provisionerConfiguration, logger: logger)
        _ = try provisioner.instanceID()
        var poolConfiguration = WarmPool.Configuration()
        poolConfiguration.checkInterval = configuration.service.checkInterval
        poolConfiguration.backoff = configuration.service.backoff
        poolConfiguration.timer = timer
        poolConfiguration.statusDirectory = environment.sandboxesDirectory.map(Self.statusDirectory(sandboxes:))
        let pools = configuration.templates.filter { $0.pool.minIdle > 0 }.map {
            WarmPool(template: $0, provisioner: provisioner, configuration: poolConfiguration, logger: logger)
        }
        var reaperConfiguration = SandboxReaper.Configuration()
        reaperConfiguration.interval = configuration.service.reapInterval
        reaperConfiguration.timer = timer
        reaperConfiguration.templates = Set(configuration.templates.map(\.name))
        let reaper = SandboxReaper(provisioner: provisioner, configuration: reaperConfiguration, logger: logger)
        let services: [any Service] = pools.map(PoolService.init) + [ReaperService(reaper: reaper)]
        return CorralServiceRunner(
            configuration: configuration, provisioner: provisioner, pools: pools, reaper: reaper, services: services,
            logger: logger)
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
