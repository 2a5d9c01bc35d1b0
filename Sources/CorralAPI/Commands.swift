import CorralCore
import CorralSandbox
import DockerEngine
import Foundation

/// `POST /v1/sandboxes/{id}/commands`: a command that runs on while its caller talks to it.
///
/// Without `detached`, the answer is the command's stream (NDJSON lines of
/// `CommandStreamEvent`, the first naming the command) and the command stops when that
/// response's client goes away. With `detached`, the answer is `CommandHandle` at once and
/// the command runs on until it ends or is signalled; its output is read with
/// `GET …/commands/{cmd}/output`.
public struct StartCommandRequest: Codable, Sendable, Hashable {
    public var command: [String]
    public var env: [String: String]?
    public var workdir: String?
    public var timeout: DurationValue?
    /// Keep its stdin open for `POST …/commands/{cmd}/stdin` (otherwise it reads /dev/null).
    public var stdin: Bool?
    /// Run it on a pseudo-terminal of this size (its output is then all stdout).
    public var terminal: TerminalSize?
    public var detached: Bool?

    public init(_ command: SandboxCommand, stdin: Bool = false, terminal: TerminalSize? = nil, detached: Bool = false) {
        let exec = ExecRequest(command)
        self.command = exec.command
        env = exec.env
        workdir = exec.workdir
        timeout = exec.timeout
        self.stdin = stdin ? true : nil
        self.terminal = terminal
        self.detached = detached ? true : nil
    }

    public func sandboxCommand() throws -> SandboxCommand {
        var exec = ExecRequest(SandboxCommand(["true"]))
        exec.command = command
        exec.env = env
        exec.workdir = workdir
        exec.timeout = timeout
        return try exec.sandboxCommand()
    }

    /// The terminal's size, checked (1-1000 rows, 1-2000 columns).
    public func checkedTerminal() throws -> TerminalSize? { try terminal?.validated() }
}

/// A command as its starter or an attach sees it: its id, and where its stream begins.
public struct CommandHandle: Codable, Sendable, Hashable {
    public var id: CommandID
    /// Its pid inside the sandbox; nil when the engine's exec runs it.
    public var pid: Int?
    public var arguments: [String]
    public var detached: Bool
    public var terminal: Bool
    public var stdin: Bool
    /// The offset of the first output byte this stream gives.
    public var startOffset: Int64
    /// How many bytes between the offset asked for and `startOffset` were dropped: the
    /// command's buffer keeps its newest 1 MiB only.
    public var droppedBytes: Int64

    public init(_ command: RunningCommand) {
        id = command.id
        pid = command.pid
        arguments = command.arguments
        detached = command.isDetached
        terminal = command.hasTerminal
        stdin = command.acceptsInput
        startOffset = command.startOffset
        droppedBytes = command.droppedBytes
    }
}

/// One line of a command's stream: first `command` (which command, where the stream
/// starts, what was dropped), then output chunks (base64, each with its offset in the
/// command's output), then `status` when it ended, or `error`.
public struct CommandStreamEvent: Codable, Sendable, Hashable {
    public var command: CommandHandle?
    public var stream: String?
    public var data: String?
    public var offset: Int64?
    public var status: CommandStatus?
    public var error: APIErrorBody?

    public init(
        command: CommandHandle? = nil, stream: String? = nil, data: String? = nil, offset: Int64? = nil,
        status: CommandStatus? = nil, error: APIErrorBody? = nil
    ) {
        self.command = command
        self.stream = stream
        self.data = data
        self.offset = offset
        self.status = status
        self.error = error
    }

    public static func output(_ chunk: CommandOutputChunk) -> CommandStreamEvent {
        CommandStreamEvent(
            stream: chunk.stream == .stderr ? "stderr" : "stdout", data: Data(chunk.bytes).base64EncodedString(),
            offset: chunk.offset)
    }

    public var chunk: CommandOutputChunk? {
        guard let data, let bytes = Data(base64Encoded: data) else { return nil }
        return CommandOutputChunk(
            stream: stream == "stderr" ? .stderr : .stdout, offset: offset ?? 0, bytes: [UInt8](bytes))
    }
}

/// `POST …/commands/{cmd}/signal`: a signal by name (`TERM`, `SIGKILL`) or number (`"9"`).
public struct SignalRequest: Codable, Sendable, Hashable {
    public var signal: String

    public init(signal: String) { self.signal = signal }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let number = try? container.decode(Int.self, forKey: .signal) {
            signal = String(number)
        } else {
            signal = try container.decodeIfPresent(String.self, forKey: .signal) ?? "TERM"
        }
    }
}

/// `POST …/commands/{cmd}/stdin`'s answer: how many bytes reached the command.
public struct StdinWritten: Codable, Sendable, Hashable {
    public var bytes: Int64
    public var closed: Bool

    public init(bytes: Int64, closed: Bool) {
        self.bytes = bytes
        self.closed = closed
    }
}

/// `POST /v1/sandboxes/{id}/rename`.
public struct RenameRequest: Codable, Sendable, Hashable {
    public var from: String
    public var to: String

    public init(from: String, to: String) {
        self.from = from
        self.to = to
    }
}

/// An entry of `GET /v1/sandboxes/{id}/directory`.
public struct DirectoryEntry: Codable, Sendable, Hashable {
    public var name: String
    /// file, directory, symlink or other.
    public var kind: String
    public var size: Int64
    public var mode: UInt32
    public var modified: Date
    public var linkTarget: String?

    public init(_ info: SandboxFileInfo) {
        name = info.name
        kind = info.kind.rawValue
        size = info.size
        mode = info.mode
        modified = info.modified
        linkTarget = info.linkTarget
    }
}
