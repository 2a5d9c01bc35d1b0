import CorralCore
import DockerEngine

/// Commands that run on while their caller talks to them: stdin, terminals, detached commands,
/// re-attaching, listing and signals. They go over the sandbox's control connection; the
/// engine's exec does only what it can (a plain `start`) and refuses the rest with an error
/// that says the control connection is needed.
extension Sandbox {
    /// Starts `command` and returns it running.
    ///
    /// - `stdin`: its stdin stays open for `RunningCommand.write(stdin:)` and `closeStdin()`
    ///   (otherwise it reads /dev/null).
    /// - `terminal`: it runs on a new pseudo-terminal of that size, as the controlling terminal
    ///   of its session; its output is the terminal's (all of it stdout), and `resize` reaches
    ///   it as SIGWINCH.
    /// - `detached`: it outlives its caller and the control connection; attach to it again
    ///   with its id. Otherwise it is stopped when its caller goes away.
    public func start(
        _ command: SandboxCommand, stdin: Bool = false, terminal: TerminalSize? = nil, detached: Bool = false
    ) async throws -> RunningCommand {
        try await transport.start(command, stdin: stdin, terminal: terminal, detached: detached)
    }

    /// Streams a running command's output from `offset` (0: from its start), replaying what
    /// corral-init still holds of it (the newest 1 MiB); `droppedBytes` says how much before
    /// that is gone. With `stdin`, writes reach the command's stdin too, if it has one open.
    /// An unknown command is `.notFound`; one that has finished is `.conflict`.
    public func attach(_ id: CommandID, from offset: Int64 = 0, stdin: Bool = false) async throws -> RunningCommand {
        try await transport.attach(id, from: offset, stdin: stdin)
    }

    /// The commands corral-init keeps: running ones, and ended ones for ten minutes (the
    /// newest 128), oldest first.
    public func commands() async throws -> [CommandInfo] {
        try await transport.commands()
    }

    /// Sends `signal` to a running command's process group.
    public func signal(id: CommandID, _ signal: CommandSignal) async throws {
        try await transport.signal(id, signal)
    }
}
