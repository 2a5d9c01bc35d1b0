import ArgumentParser
import CorralCore
import CorralSandbox
import CorralService
import Foundation

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the service in the foreground: warm pools and the reaper (later corrald).",
        discussion: """
            Reads corral.toml (--config, else CORRAL_CONFIG, else $STATE/corral.toml). Keeps \
            min_idle members of each template with a pool, recycles old and stale ones, and \
            removes expired, idle and orphaned sandboxes. On start it adopts whatever an earlier \
            run left on the engine. SIGTERM or SIGINT stops it; idle members stay for the next \
            start to adopt (remove them with `corral pool drain`).
            """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("corral.toml to serve.", valueName: "FILE"))
    var config: String?

    func run() async throws {
        let context = CommandContext(global)
        guard let configuration = try context.configuration(explicit: config) else {
            throw CorralError.invalidArgument(
                "corral serve needs a configuration file",
                hint:
                    "pass --config FILE, set CORRAL_CONFIG, or put one at \(try context.stateDirectory().path)/corral.toml (see deploy/corral.example.toml)"
            )
        }
        let engine = try context.engine(configuration: configuration)
        defer { engine.shutdown() }
        let runner = try await CorralServiceRunner.prepare(
            configuration: configuration, engine: engine, environment: try context.sandboxEnvironment(),
            logger: context.logger)
        let pools = configuration.templates.filter { $0.pool.minIdle > 0 }
            .map { "\($0.name) (min_idle \($0.pool.minIdle), max_total \($0.pool.maxTotal))" }
        let banner =
            "corral serve: pools \(pools.isEmpty ? "none" : pools.joined(separator: ", ")); "
            + "reaper every \(configuration.service.reapInterval.compactDescription); state \(try context.stateDirectory().path)\n"
        FileHandle.standardOutput.write(Data(banner.utf8))
        try await runner.run()
        FileHandle.standardOutput.write(Data("corral serve: stopped\n".utf8))
    }
}
