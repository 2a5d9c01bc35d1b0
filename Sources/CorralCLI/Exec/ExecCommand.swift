import ArgumentParser
import CorralCore
import CorralSandbox
import DockerEngine
import Foundation

struct ExecCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command in a sandbox, streaming its output; exit with its status.",
        discussion: "A command past its --timeout is killed with its children and corral exits 124."
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var command: CommandOptions

    @Option(
        name: .customLong("env"), help: ArgumentHelp("Environment variable, KEY=VALUE (repeatable).", valueName: "K=V"))
    var environment: [String] = []

    @Argument(help: "The sandbox id.")
    var id: String

    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.")
    var arguments: [String] = []

    func validate() throws {
        guard !arguments.isEmpty else {
            throw ValidationError("give the command after --, such as: corral exec ID -- ls -la")
        }
    }

    func run() async throws {
        let sandboxID = try parseSandboxID(id)
        var sandboxCommand = try command.command(arguments)
        sandboxCommand.environment = try parsePairs(environment, what: "environment variable")
        let backend = try await CommandContext(global).backend()
        defer { backend.shutdown() }
        let status = try await streamCommand(sandboxCommand, in: sandboxID, backend: backend)
        throw ExitCode(status)
    }
}

/// How a command runs: `--workdir`, `--timeout`.
struct CommandOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Directory to run in (default /workspace).", valueName: "DIR"))
    var workdir: String?

    @Option(
        help: ArgumentHelp(
            "Kill the command after this long, such as 60s or 10m (default: none).", valueName: "DURATION"))
    var timeout: String?

    func command(_ arguments: [String]) throws -> SandboxCommand {
        var timeoutValue: Duration?
        if let timeout {
            let duration = try Duration(parsing: timeout)
            guard duration > .zero else {
                throw CorralError.invalidArgument("invalid --timeout '\(timeout)': it must be longer than 0")
            }
            timeoutValue = duration
        }
        if let workdir, !workdir.hasPrefix("/") {
            throw CorralError.invalidArgument("--workdir must be an absolute path, got '\(workdir)'")
        }
        return SandboxCommand(arguments, workingDirectory: workdir, timeout: timeoutValue)
    }
}

/// Runs `command`, copying its stdout and stderr to ours as they arrive. Returns the exit
/// status to pass on: the command's own, or 124 when it timed out.
func streamCommand(_ command: SandboxCommand, in sandbox: SandboxID, backend: any SandboxBackend) async throws -> Int32
{
    let status = try await backend.run(sandbox, command) { stream, bytes in
        let handle = stream == .stderr ? FileHandle.standardError : FileHandle.standardOutput
        handle.write(Data(bytes))
    }
    if status.timedOut {
        CLIOutput.printError(
            CorralError(
                .timeout,
                "the command timed out after \(command.timeout?.compactDescription ?? "its limit") and was killed"))
        return 124
    }
    if status.oomKilled {
        CLIOutput.printError(
            CorralError(.resourceExhausted, "the command was killed for exceeding the sandbox's memory limit"))
    }
    return Int32(truncatingIfNeeded: status.exitCode)
}
