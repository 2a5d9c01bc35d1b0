import ArgumentParser
import CorralAPI
import CorralCore
import CorralSandbox
import Foundation

struct AttachCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attach",
        abstract: "Follow a running command's output, from where you left off; exit with its status.",
        discussion: """
            The command keeps its newest 1 MiB of output: --from replays from that offset if it is still \\
            held, and says on stderr how many bytes before it were dropped. Leaving (^C) stops only \\
            the following, never the command.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("Output offset to start from (default 0: all that is kept).", valueName: "OFFSET"))
    var from: Int64 = 0

    @Argument(help: "The sandbox id.")
    var id: String

    @Argument(help: "The command id (from `corral exec --detach` or `corral ps`).")
    var command: String

    func validate() throws {
        guard from >= 0 else { throw ValidationError("--from must be 0 or more") }
    }

    func run() async throws {
        let sandboxID = try parseSandboxID(id)
        let commandID = try CommandID(validating: command)
        let backend = try await CommandContext(global).backend()
        defer { backend.shutdown() }
        let status = try await backend.attach(
            sandboxID, commandID, from: from,
            attached: { handle in
                if handle.droppedBytes > 0 {
                    CLIOutput.note(
                        "corral: \(handle.droppedBytes) bytes of output were dropped before offset \(handle.startOffset)"
                    )
                }
            },
            output: { chunk in
                let handle = chunk.stream == .stderr ? FileHandle.standardError : FileHandle.standardOutput
                handle.write(Data(chunk.bytes))
            })
        throw ExitCode(Int32(truncatingIfNeeded: status.exitCode))
    }
}

struct PsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps", abstract: "List a sandbox's commands: running ones, and ended ones for ten minutes.")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON.")
    var json = false

    @Argument(help: "The sandbox id.")
    var id: String

    func run() async throws {
        let sandboxID = try parseSandboxID(id)
        let backend = try await CommandContext(global).backend()
        defer { backend.shutdown() }
        let commands = try await backend.commands(sandboxID)
        if json {
            try CLIOutput.printJSON(commands)
            return
        }
        var rows = [["ID", "PID", "STATE", "STATUS", "DETACHED", "TTY", "AGE", "OUTPUT", "COMMAND"]]
        let now = Date()
        for command in commands {
            rows.append([
                command.id.rawValue, String(command.pid), command.state.rawValue,
                command.status.map { String($0.exitCode) } ?? "-", command.detached ? "yes" : "no",
                command.terminal ? "yes" : "no", CLIOutput.age(now.timeIntervalSince(command.started)),
                String(command.outputEnd), command.arguments.joined(separator: " "),
            ])
        }
        CLIOutput.printTable(rows)
    }
}

struct KillCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kill", abstract: "Send a signal (default TERM) to a running command's process group.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The sandbox id.")
    var id: String

    @Argument(help: "The command id.")
    var command: String

    @Argument(help: "The signal, by name (TERM, KILL, INT, HUP) or number.")
    var signal: String = "TERM"

    func run() async throws {
        let sandboxID = try parseSandboxID(id)
        let commandID = try CommandID(validating: command)
        let signal = try CommandSignal(parsing: signal)
        let backend = try await CommandContext(global).backend()
        defer { backend.shutdown() }
        try await backend.signal(sandboxID, commandID, signal)
    }
}
