import CorralCore
import DockerEngine
import Synchronization

/// A command started with `Sandbox.start` (or reached again with `Sandbox.attach`): its output
/// as it comes, its stdin, its terminal, its signals and its end.
///
/// Read `output` (once) for the output; `wait()` for the status. `wait()` without a reader
/// drops the output, so that a command whose output nobody wants is not held up: output is
/// flow-controlled, and a command whose output is not read waits for its reader once
/// corral-init's buffer for it is full. That wait is the command's own: other commands of the
/// sandbox run on.
///
/// The caller going away stops a command that was not started detached: when the task reading
/// its output or waiting for it is cancelled, and when this object is released before the
/// command ended (`detach()` says so explicitly). A detached command runs on; only the stream
/// ends.
public final class RunningCommand: Sendable {
    public let id: CommandID
    /// Its pid inside the sandbox; nil when the transport does not know it (the engine's exec).
    public let pid: Int?
    public let arguments: [String]
    public let isDetached: Bool
    public let hasTerminal: Bool
    /// Whether `write(stdin:)` reaches it.
    public let acceptsInput: Bool
    /// The offset of the first output byte this stream gives (0 for a command started here; an
    /// attach's offset, or later when what it asked for was dropped).
    public let startOffset: Int64
    /// How many bytes between the offset asked for and `startOffset` were dropped before the
    /// attach (the command's buffer keeps the newest output only).
    public let droppedBytes: Int64

    let inbox: CommandInbox
    let controls: any CommandControls
    private let released = Atomic(false)

    init(
        id: CommandID, pid: Int?, arguments: [String], isDetached: Bool, hasTerminal: Bool, acceptsInput: Bool,
        startOffset: Int64 = 0, droppedBytes: Int64 = 0, inbox: CommandInbox, controls: any CommandControls
    ) {
        self.id = id
        self.pid = pid
        self.arguments = arguments
        self.isDetached = isDetached
        self.hasTerminal = hasTerminal
        self.acceptsInput = acceptsInput
        self.startOffset = startOffset
        self.droppedBytes = droppedBytes
        self.inbox = inbox
        self.controls = controls
    }

    deinit {
        if inbox.currentEnding == nil { release() }
    }

    /// The output, chunk by chunk, in order, each with its offset; it ends when the command
    /// exits, and throws when the command is lost (its sandbox or connection went) or the
    /// reading task is cancelled (which stops a command that was not started detached).
    public var output: Output { Output(command: self) }

    public struct Output: AsyncSequence, Sendable {
        public typealias Element = CommandOutputChunk
        let command: RunningCommand

        public struct AsyncIterator: AsyncIteratorProtocol {
            let command: RunningCommand
            public mutating func next() async throws -> CommandOutputChunk? { try await command.nextChunk() }
        }

        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(command: command) }
    }

    /// The next chunk of output; nil once the command ended and all of it was read.
    public func nextChunk() async throws -> CommandOutputChunk? {
        do {
            return try await inbox.next()
        } catch is CancellationError {
            release()
            throw CancellationError()
        } catch is CommandInbox.LostCommand {
            throw await controls.lossError(command: id, detached: isDetached)
        }
    }

    /// Waits for the command to end and returns how it ended. Output nobody reads is dropped
    /// meanwhile. Cancelling the wait stops a command that was not started detached.
    public func wait() async throws -> CommandStatus {
        let ending = await withTaskCancellationHandler {
            await inbox.ending()
        } onCancel: {
            release()
        }
        try Task.checkCancellation()
        switch ending {
        case .exited(let status): return status
        case .failed(let error): throw error
        case .lost: throw await controls.lossError(command: id, detached: isDetached)
        }
    }

    /// Writes to the command's stdin, waiting while corral-init holds as much of it as it
    /// takes at once. Throws when the command has exited or closed its stdin, or was started
    /// without stdin.
    public func write(stdin bytes: [UInt8]) async throws {
        try checkInput()
        guard !bytes.isEmpty else { return }
        try await controls.write(bytes)
    }

    public func write(stdin text: String) async throws { try await write(stdin: Array(text.utf8)) }

    /// Closes the command's stdin: it reads the end of its input. On a terminal, sends the
    /// EOF character (^D), which a program reading lines takes as the end at a line's start.
    public func closeStdin() async throws {
        try checkInput()
        try await controls.closeStdin()
    }

    /// Changes the terminal's size; the program gets SIGWINCH. Refused for a command without a
    /// terminal, and for sizes out of `TerminalSize`'s range.
    public func resize(_ size: TerminalSize) async throws {
        let size = try size.validated()
        guard hasTerminal else {
            throw CorralError.invalidArgument(
                "command \(id) has no terminal to resize", hint: "start it with a terminal to resize it")
        }
        try checkRunning()
        try await controls.resize(size)
    }

    public func resize(rows: Int, columns: Int) async throws {
        try await resize(TerminalSize(rows: rows, columns: columns))
    }

    /// Sends `signal` to the command's process group.
    public func signal(_ signal: CommandSignal) async throws {
        try checkRunning()
        try await controls.signal(signal)
    }

    /// Stops following the command: its stream ends here. A command started detached runs on
    /// (attach to it again with its id); any other is stopped, as when its caller goes away.
    public func detach() {
        release()
    }

    private func release() {
        guard !released.exchange(true, ordering: .relaxed) else { return }
        controls.release()
        inbox.finish(.failed(CancellationError()))
    }

    private func checkRunning() throws {
        if case .exited(let status) = inbox.currentEnding {
            throw CorralError(.conflict, "command \(id) has exited, with status \(status.exitCode)")
        }
    }

    private func checkInput() throws {
        guard acceptsInput else {
            throw CorralError.invalidArgument(
                "command \(id) was started without stdin", hint: "start it with stdin: true to write to it")
        }
        if case .exited(let status) = inbox.currentEnding {
            throw CorralError(
                .conflict, "command \(id) has exited, with status \(status.exitCode): its stdin is closed")
        }
    }
}

/// What a transport does for a running command besides handing its output to the inbox.
protocol CommandControls: Sendable {
    func write(_ bytes: [UInt8]) async throws
    func closeStdin() async throws
    func resize(_ size: TerminalSize) async throws
    func signal(_ signal: CommandSignal) async throws
    /// The caller has gone: stop following (which stops a command that was not detached).
    func release()
    /// The error for a command its transport lost, after looking at the sandbox.
    func lossError(command: CommandID, detached: Bool) async -> any Error
}
