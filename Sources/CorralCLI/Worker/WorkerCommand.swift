import ArgumentParser
import CorralAPI
import CorralCore
import CorralFleet
import CorralServer
import CorralService
import CorralWorker
import Foundation

/// `corral worker`: an engine host that dials out to a control plane (docs/workers.md).
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run this host as a worker of a control plane, or manage workers.",
        subcommands: [WorkerRun.self, WorkerList.self, WorkerTokenCommand.self],
        defaultSubcommand: WorkerRun.self)
}

struct WorkerRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Serve this host's engine to a control plane: dial it, and take its calls.",
        discussion: """
            Runs the pools, the reaper and the gateway of this host (from corral.toml, as \
            `corral serve` does), answers the local command line on $STATE/corral.sock, and \
            dials --server: one TLS connection (plain http:// on loopback only) on which the \
            control plane's calls arrive. It accepts no inbound connection, and dials again with \
            backoff when the link ends. A refused token, group or protocol stops it with the \
            reason. `corral worker --server URL --token T` is `corral worker run …`; so is \
            `corrald worker …`.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(
        help: ArgumentHelp("A worker token (`corral worker token add` on the control plane); or CORRAL_WORKER_TOKEN."))
    var token: String?

    @Option(help: ArgumentHelp("The group to join; checked against the token's.", valueName: "G"))
    var group: String?

    @Option(help: ArgumentHelp("This worker's name (default: the host name).", valueName: "NAME"))
    var name: String?

    @Option(help: ArgumentHelp("PEM certificates that verify the control plane.", valueName: "FILE"))
    var ca: String?

    @Option(
        help: ArgumentHelp(
            "This worker's client certificate (PEM), for a control plane with [workers] client_ca.", valueName: "FILE"))
    var cert: String?

    @Option(help: ArgumentHelp("The private key (PEM) of --cert.", valueName: "FILE"))
    var key: String?

    @Option(name: .customLong("max-sandboxes"), help: "Most sandboxes this worker runs at once (placement's room).")
    var maxSandboxes = 64

    @Option(help: ArgumentHelp("corral.toml for this host's templates and pools.", valueName: "FILE"))
    var config: String?

    func run() async throws {
        // The global --server (or CORRAL_SERVER) names the control plane's worker port here.
        guard let controlPlane = global.server ?? global.environment["CORRAL_SERVER"], !controlPlane.isEmpty else {
            throw CorralError.invalidArgument(
                "a worker needs its control plane", hint: "pass --server https://HOST:PORT (its [workers] listen)")
        }
        guard let token = token ?? global.environment["CORRAL_WORKER_TOKEN"], !token.isEmpty else {
            throw CorralError.invalidArgument(
                "a worker needs a token", hint: "pass --token, or set CORRAL_WORKER_TOKEN")
        }
        if let group { try WorkerGroup.validate(group) }
        let context = CommandContext(global)
        let configuration = try context.configuration(explicit: config) ?? .embeddedDefaults
        let service = try await ServiceAssembly.make(
            context: context, global: global, configuration: configuration, listen: nil, workers: nil,
            poolEveryTemplate: true)
        defer { service.engine.shutdown() }
        let server = service.server.make()
        var settings = WorkerAgent.Settings(
            server: controlPlane, token: token, name: name ?? ProcessInfo.processInfo.hostName.lowercased())
        settings.group = group
        settings.caFile = ca
        settings.certificateFile = cert
        settings.keyFile = key
        settings.maxSandboxes = maxSandboxes
        let agent = WorkerAgent(settings: settings, host: server.host, logger: context.logger) { address in
            say("corral worker: connected to \(address)")
        }
        say("corral worker: \(settings.name) for \(controlPlane); state \(service.state.path)")
        try await server.run(extraServices: [agent]) { address in
            say("corral worker: listening on \(address)")
        }
        await SessionStoreSelection.close(service.sessions)
        say("corral worker: stopped")
    }
}

struct WorkerList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls", abstract: "List the workers connected to this control plane.")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        guard let client = try await CommandContext(global).serviceClient() else {
            throw CorralError(
                .unavailable, "no service answers here", hint: "workers connect to a running `corral serve`")
        }
        defer { client.shutdown() }
        let workers = try await client.listWorkers()
        if json { return try CLIOutput.printJSON(workers) }
        let now = Date()
        CLIOutput.printTable(
            [["NAME", "GROUP", "STATE", "SANDBOXES", "CAPACITY", "TEMPLATES", "VERSION", "HEARTBEAT"]]
                + workers.map { worker in
                    [
                        worker.name, worker.group, worker.state,
                        "\(worker.sandboxes)/\(worker.capacity.map { String($0.maxSandboxes) } ?? "?")",
                        worker.capacity.map { "\($0.cpus) cpu, \(ByteSize(bytes: $0.memoryBytes))" } ?? "-",
                        worker.templates.isEmpty ? "-" : worker.templates.joined(separator: ","),
                        "\(worker.version) (p\(worker.protocol))",
                        worker.lastHeartbeat.map { "\(Int(now.timeIntervalSince($0)))s ago" } ?? "never",
                    ]
                })
    }
}

struct WorkerTokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Tokens that admit workers to a group.",
        subcommands: [WorkerTokenAdd.self, WorkerTokenList.self, WorkerTokenRemove.self])
}

struct WorkerTokenAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Make a worker token for a group and print it, once: only its hash is kept.")

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("The group its workers join.", valueName: "G"))
    var group = WorkerGroup.defaultName

    @Flag(help: "Print JSON (id, group, token).")
    var json = false

    func run() async throws {
        let (token, entry) = try await global.withSessionStore {
            try await WorkerTokenRegistry(store: $0, stateDirectory: $1).add(group: group)
        }
        if json {
            try CLIOutput.printJSON(["id": entry.id, "group": entry.group, "token": token])
        } else {
            print(token)
        }
    }
}

struct WorkerTokenList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls", abstract: "List worker tokens (never the tokens).")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let tokens = try await global.withSessionStore {
            try await WorkerTokenRegistry(store: $0, stateDirectory: $1).list()
        }
        CLIOutput.printTable(
            [["ID", "GROUP", "CREATED"]]
                + tokens.map { [$0.id, $0.group, ISO8601DateFormatter().string(from: $0.created)] })
    }
}

struct WorkerTokenRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm", abstract: "Remove a worker token; the links that hold it close at their next heartbeat.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The token's id, as `corral worker token ls` shows it.")
    var id: String

    func run() async throws {
        let removed = try await global.withSessionStore {
            try await WorkerTokenRegistry(store: $0, stateDirectory: $1).remove(id: id)
        }
        guard removed else {
            throw CorralError(.notFound, "no worker token '\(id)'", hint: "`corral worker token ls` lists them")
        }
    }
}
