import ArgumentParser
import CorralCore
import CorralFleet
import CorralSandbox
import CorralServer
import CorralService
import CorralSession
import DockerEngine
import Foundation
import Logging
import Metrics
import Prometheus

/// A line on stdout, unbuffered, so that scripts waiting for "listening on" see it at once.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the service (corrald) in the foreground: the HTTP API, warm pools and the reaper.",
        discussion: """
            Reads corral.toml (--config, else CORRAL_CONFIG, else $STATE/corral.toml; without \
            one it runs embedded defaults: template `base` with 2 warm members). Answers on \
            $STATE/corral.sock for the local command line and, with tenant tokens, on \
            [server] listen (default 127.0.0.1:8420). Keeps min_idle members of each pool, \
            removes expired, idle and orphaned sandboxes, and adopts whatever an earlier run \
            left on the engine. SIGTERM or SIGINT drains requests and stops it; idle members \
            stay for the next start (remove them with `corral pool drain`).
            """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("corral.toml to serve.", valueName: "FILE"))
    var config: String?

    @Option(
        help: ArgumentHelp(
            "Listen on host:port for tenants (\"\" for none); overrides [server] listen.", valueName: "ADDR"))
    var listen: String?

    @Flag(
        help: ArgumentHelp(
            "Run as the host agent the command line starts on demand: the unix socket only, no pools unless corral.toml names some, and an idle exit (see CORRAL_AGENT in corral --help)."
        ))
    var agent = false

    @Option(
        name: .customLong("idle-exit"),
        help: ArgumentHelp(
            "Stop after this long with no request under way and no agent run (default: never; 5m with --agent).",
            valueName: "DURATION"))
    var idleExit: String?

    /// A pipe the command line that started this agent waits on: one byte once the socket
    /// answers.
    @Option(name: .customLong("ready-fd"), help: .hidden)
    var readyFD: Int32?

    @Option(
        name: .customLong("workers-listen"),
        help: ArgumentHelp(
            "Listen on host:port for workers that dial in (\"\" for none); overrides [workers] listen.",
            valueName: "ADDR"))
    var workersListen: String?

    func run() async throws {
        let context = CommandContext(global)
        // The agent serves what the state directory's corral.toml says, and nothing more: no
        // embedded warm pool that a plain `corral run` did not ask for.
        var configuration =
            try context.configuration(explicit: config) ?? (agent ? CorralConfiguration() : .embeddedDefaults)
        if let workersListen { configuration.workers.listen = workersListen.isEmpty ? nil : workersListen }
        var service = try await ServiceAssembly.make(
            context: context, global: global, configuration: configuration,
            listen: agent ? nil : listen.map { $0.isEmpty ? nil : $0 } ?? configuration.server.listen,
            workers: agent ? nil : configuration.workers)
        defer { service.engine.shutdown() }
        if let idleExit {
            service.server.configuration.idleExit = try Duration(parsing: idleExit)
        } else if agent {
            service.server.configuration.idleExit = HostAgent.idleExit(environment: global.environment)
        }
        let pools = configuration.templates.filter { $0.pool.minIdle > 0 }
            .map { "\($0.name) (min_idle \($0.pool.minIdle), max_total \($0.pool.maxTotal))" }
        say(
            "corral serve: \(configuration.source ?? "configuration"); pools \(pools.isEmpty ? "none" : pools.joined(separator: ", ")); state \(service.state.path)"
        )
        let readyFD = self.readyFD
        try await service.server.make().run(onReady: { address in
            say("corral serve: listening on \(address)")
            if let readyFD, address.hasPrefix("unix://") {
                _ = write(readyFD, "1", 1)
                close(readyFD)
            }
        })
        await SessionStoreSelection.close(service.sessions)
        say("corral serve: stopped")
    }
}

/// What `corral serve` and `corral worker` both run: the engine, the session store, the pools,
/// the reaper and the gateway (the runner), and the API over them.
struct ServiceAssembly {
    let engine: DockerEngineClient
    let sessions: any SessionStore
    let state: URL
    var server: ServerParts

    /// The server's parts, made into a `CorralServer` once the caller set what it needs.
    struct ServerParts {
        var configuration: CorralServer.Configuration
        let runner: CorralServiceRunner
        let tenants: TenantRegistry
        let sessions: (any SessionStore)?
        let metrics: PrometheusCollectorRegistry
        let logger: Logger

        func make() -> CorralServer {
            CorralServer(
                configuration: configuration, runner: runner, tenants: tenants, sessions: sessions, metrics: metrics,
                logger: logger)
        }
    }

    static func make(
        context: CommandContext, global: GlobalOptions, configuration: CorralConfiguration, listen: String?,
        workers: CorralConfiguration.Workers?, poolEveryTemplate: Bool = false
    ) async throws -> ServiceAssembly {
        let state = try context.stateDirectory()
        let engine = try context.engine(configuration: configuration)
        do {
            let sessions = try await SessionStoreSelection.open(
                configuration: configuration, environment: global.environment, stateDirectory: state,
                logger: context.logger)
            let runner = try await CorralServiceRunner.prepare(
                configuration: configuration, engine: engine, environment: try context.sandboxEnvironment(),
                sessions: sessions, poolEveryTemplate: poolEveryTemplate, logger: context.logger)
            if case .created(let file)? = runner.vault?.keyOrigin {
                say("corral serve: made a new vault key at \(file.path) (mode 0600); keep it safe")
            }
            var settings = CorralServer.Configuration(
                socketPath: configuration.server.socket ?? state.appendingPathComponent("corral.sock").path,
                listen: listen)
            settings.stateDirectory = state.path
            settings.sandboxesPerTenant = configuration.limits.sandboxesPerTenant
            settings.sessionsPerTenant = configuration.limits.sessionsPerTenant
            settings.maxArchiveBytes = configuration.limits.maxArchiveBytes.bytes
            settings.headerTimeout = configuration.server.headerTimeout
            settings.idleTimeout = configuration.server.idleTimeout
            settings.shutdownTimeout = configuration.server.shutdownTimeout
            settings.runLeaseTTL = configuration.store.runLease
            if let workers, let listen = workers.listen {
                var listener = WorkerListener.Settings(listen: listen)
                listener.certificate = workers.tlsCert
                listener.key = workers.tlsKey
                listener.clientCA = workers.clientCA
                listener.advertise = workers.advertise
                listener.fleet.heartbeat = workers.heartbeat
                listener.fleet.grace = workers.grace
                listener.fleet.sample = workers.sample
                listener.fleet.localGroup = workers.localGroup.isEmpty ? nil : workers.localGroup
                listener.fleet.pools = workers.pools
                settings.workers = listener
            }
            // The pools' and provisioner's figures (swift-metrics) go to the registry /metrics shows.
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            return ServiceAssembly(
                engine: engine, sessions: sessions, state: state,
                server: ServerParts(
                    configuration: settings, runner: runner,
                    tenants: TenantRegistry(store: sessions, stateDirectory: state),
                    sessions: sessions, metrics: registry, logger: context.logger))
        } catch {
            engine.shutdown()
            throw error
        }
    }
}
