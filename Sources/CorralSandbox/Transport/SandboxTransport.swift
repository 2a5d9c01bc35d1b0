import CorralCore
import DockerEngine

/// A command to run inside a sandbox.
public struct SandboxCommand: Sendable, Hashable {
    public var arguments: [String]
    public var environment: [String: String]
    /// Defaults to the workspace.
    public var workingDirectory: String?
    /// The process group is terminated (SIGTERM, then SIGKILL) when this passes.
    public var timeout: Duration?

    public init(
        _ arguments: [String], environment: [String: String] = [:], workingDirectory: String? = nil,
        timeout: Duration? = nil
    ) {
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.timeout = timeout
    }
}

/// How a command ended.
public struct CommandStatus: Sendable, Hashable, Codable {
    /// The exit status; 128+N when killed by signal N.
    public var exitCode: Int
    public var timedOut: Bool
    /// The kernel's out-of-memory killer ended it: the sandbox's memory limit held.
    public var oomKilled: Bool
    public var durationMilliseconds: Double

    public init(exitCode: Int, timedOut: Bool, oomKilled: Bool, durationMilliseconds: Double) {
        self.exitCode = exitCode
        self.timedOut = timedOut
        self.oomKilled = oomKilled
        self.durationMilliseconds = durationMilliseconds
    }
}

/// How commands reach a sandbox: corral-init's control connection (`ControlTransport`), or the
/// engine's exec (`EngineExecTransport`). Tools are written against this seam only.
public protocol SandboxTransport: Sendable {
    /// Runs `command`, handing output to `output` as it arrives, and returns how it ended.
    /// Throws `CorralError` with `.notFound` when the sandbox no longer exists and
    /// `.unavailable` when it is not running.
    func run(
        _ command: SandboxCommand, output: (StdioStream, [UInt8]) async throws -> Void
    ) async throws -> CommandStatus

    /// Starts `command` and returns it running: with stdin open, on a terminal, or detached
    /// (outliving its caller and the connection) as asked. Transports that cannot do one of
    /// those refuse with `.unsupported`.
    func start(_ command: SandboxCommand, stdin: Bool, terminal: TerminalSize?, detached: Bool) async throws
        -> RunningCommand

    /// Streams a running command's output from `offset`, replaying what is still buffered.
    func attach(_ command: CommandID, from offset: Int64, stdin: Bool) async throws -> RunningCommand

    /// The commands corral-init keeps: running, and ended a short while ago.
    func commands() async throws -> [CommandInfo]

    /// Sends `signal` to a command's process group.
    func signal(_ command: CommandID, _ signal: CommandSignal) async throws
}
