import ArgumentParser
import CorralCore
import CorralSandbox
import DockerEngine
import Foundation

struct ExecCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command in a sandbox, streaming its output; exit with its status.",
        discussion: """
            A command past its --timeout is killed with its children and corral exits 124.
            -i pipes stdin through (its end is EOF); -t runs the command on a terminal in the sandbox, with \
            this terminal in raw mode (restored on exit) and its size passed on; without a terminal on this \
            side, -t falls back to no terminal, with a note on stderr. --detach prints the command's id and \
            leaves it running: follow it with `corral attach`, list with `corral ps`, stop with `corral kill`.
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var command: CommandOptions

    @Option(
        name: .customLong("env"), help: ArgumentHelp("Environment variable, KEY=VALUE (repeatable).", valueName: "K=V"))
    var environment: [String] = []

    @Flag(name: .shortAndLong, help: "Pipe stdin to the command; its end closes the command's stdin.")
    var interactive = false

    @Flag(name: [.customShort("t"), .customLong("tty")], help: "Run the command on a terminal in the sandbox.")
    var tty = false

    @Flag(name: [.customShort("d"), .customLong("detach")], help: "Leave the command running; print its id.")
    var detach = false

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
        try await invocation.run()
    }

    var invocation: ExecInvocation {
        ExecInvocation(
            global: global, workdir: command.workdir, timeout: command.timeout, environment: environment,
            interactive: interactive, tty: tty, detach: detach, id: id, arguments: arguments)
    }
}

/// What `corral exec` was asked, whichever parser read it: ArgumentParser (`ExecCommand`) or
/// the quick path (`QuickPath.exec`).
struct ExecInvocation: Equatable {
    var global: GlobalOptions
    var workdir: String?
    var timeout: String?
    var environment: [String] = []
    var interactive = false
    var tty = false
    var detach = false
    var id: String
    var arguments: [String]

    static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.global.values == rhs.global.values && lhs.workdir == rhs.workdir && lhs.timeout == rhs.timeout
            && lhs.environment == rhs.environment && lhs.interactive == rhs.interactive && lhs.tty == rhs.tty
            && lhs.detach == rhs.detach && lhs.id == rhs.id && lhs.arguments == rhs.arguments
    }

    func run() async throws {
        let sandboxID = try parseSandboxID(id)
        var sandboxCommand = try CommandOptions(workdir: workdir, timeout: timeout).command(arguments)
        sandboxCommand.environment = try parsePairs(environment, what: "environment variable")
        var terminal: TerminalSize?
        if tty {
            if let size = LocalTerminal.size(), LocalTerminal.isInteractive || detach {
                terminal = size
            } else if detach {
                terminal = TerminalSize(rows: 24, columns: 80)
            } else {
                CLIOutput.note("corral: no terminal on this side (stdin or stdout is not one): running without -t")
            }
        }
        let backend = try await CommandContext(global).backend()
        defer { backend.shutdown() }
        if detach {
            let handle = try await backend.startDetached(
                sandboxID, sandboxCommand, stdin: interactive, terminal: terminal)
            print(handle.id.rawValue)
            return
        }
        guard interactive || terminal != nil else {
            throw ExitCode(try await streamCommand(sandboxCommand, in: sandboxID, backend: backend))
        }
        let status = try await interactCommand(
            sandboxCommand, in: sandboxID, stdin: interactive, terminal: terminal, backend: backend)
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

    init() {}

    /// Both options set (the quick path builds it so).
    init(workdir: String?, timeout: String?) {
        self.workdir = workdir
        self.timeout = timeout
    }

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

/// Runs `command` with our stdin piped to it (`stdin`) and/or on a terminal in the sandbox
/// (`terminal`, with ours in raw mode until it ends, however it ends). Returns the exit status
/// to pass on.
func interactCommand(
    _ command: SandboxCommand, in sandbox: SandboxID, stdin: Bool, terminal: TerminalSize?,
    backend: any SandboxBackend
) async throws -> Int32 {
    let local = try terminal.map { _ in try LocalTerminal() }
    defer { local?.restore() }
    let resizes = local?.resizes()
    let status = try await backend.interact(
        sandbox, command, stdin: stdin ? standardInputStream() : nil, terminal: terminal, resizes: resizes
    ) { chunk in
        let handle = chunk.stream == .stderr ? FileHandle.standardError : FileHandle.standardOutput
        handle.write(Data(chunk.bytes))
    }
    local?.restore()
    if status.timedOut {
        CLIOutput.printError(CorralError(.timeout, "the command timed out and was killed"))
        return 124
    }
    return Int32(truncatingIfNeeded: status.exitCode)
}
