import CorralCore
import DockerEngine
import Foundation

/// Runs commands through the engine's exec API, wrapped in `corral-init exec` so that a
/// timeout kills the whole process group inside the sandbox (the engine has no exec kill).
struct EngineExecTransport: SandboxTransport {
    let engine: DockerEngineClient
    let container: String
    let sandbox: SandboxID
    let environment: SandboxEnvironment
    /// The sandbox's record: its env reaches every command (bound after a warm claim, so it is
    /// not in the container's own env), and each command stamps its activity for the idle ttl.
    let records: SandboxRecordStore?
    /// Grace between SIGTERM and SIGKILL on timeout.
    var killGrace: Duration = .seconds(2)

    func run(
        _ command: SandboxCommand, output: (StdioStream, [UInt8]) async throws -> Void
    ) async throws -> CommandStatus {
        guard !command.arguments.isEmpty else { throw CorralError.invalidArgument("no command to run") }
        var argv = [SandboxEnvironment.initPath, "exec"]
        if let timeout = command.timeout {
            argv += ["--timeout", Self.seconds(timeout), "--grace", Self.seconds(killGrace)]
        }
        argv += ["--"] + command.arguments
        let variables = try environment(for: command)
        records?.touch(sandbox)
        defer { records?.touch(sandbox) }
        let request = ExecCreateRequest(
            cmd: argv, env: variables.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" },
            workingDir: command.workingDirectory ?? environment.workspace, user: SandboxUser(for: sandbox).description)
        let clock = ContinuousClock()
        let started = clock.now
        let execID: String
        do {
            execID = try await engine.createExec(container: container, request)
        } catch let error as DockerEngineError {
            throw try await explain(error)
        }
        // corral-init enforces the timeout inside the sandbox. Should the stream outlive it by
        // far (a wedged engine), stop waiting rather than hang the caller. The margin is wide:
        // on a loaded host an exec's start alone has taken over ten seconds.
        let streamLimit = command.timeout.map { $0 + killGrace + .seconds(30) }
        var oom = OOMWatch()
        do {
            try await engine.withExecOutput(execID, timeout: streamLimit) { stream in
                for try await (kind, bytes) in stream {
                    oom.see(kind, bytes)
                    try await output(kind, bytes)
                }
            }
        } catch let error as CorralError where error.code == .timeout {
            throw CorralError(
                .timeout,
                "sandbox \(sandbox): the command's output did not end within \(streamLimit?.compactDescription ?? "its limit")"
            )
        }
        let exitCode = try await exitCode(of: execID)
        return CommandStatus(exitCode: exitCode, elapsed: clock.now - started, timeout: command.timeout, oom: oom)
    }

    /// The sandbox's env (bound after a warm claim, so not in the container's own) under the
    /// command's own; stamps the sandbox's activity for the idle ttl.
    func environment(for command: SandboxCommand) throws -> [String: String] {
        var variables = try records?.read(sandbox)?.env ?? [:]
        variables.merge(command.environment) { _, own in own }
        return variables
    }

    /// Throws what is wrong when the sandbox's container is gone or not running.
    func checkRunning() async throws {
        let state: ContainerInspect.State
        do {
            state = try await engine.inspectContainer(container).state
        } catch let error as DockerEngineError {
            throw try await explain(error)
        }
        if state.running { return }
        throw notRunning(state)
    }

    private func notRunning(_ state: ContainerInspect.State?) -> CorralError {
        var why = "it is not running"
        if let state {
            why = "it is \(state.status)"
            if state.oomKilled {
                why += " (killed by the out-of-memory killer)"
            } else if state.status == "exited" {
                why += " with status \(state.exitCode)"
            }
        }
        return CorralError(
            .unavailable, "sandbox \(sandbox) cannot run commands: \(why)", hint: "provision a new sandbox")
    }

    /// The engine reports the exit code a moment after the output closes; ask until it does.
    private func exitCode(of execID: String) async throws -> Int {
        var delay = Duration.milliseconds(1)
        for _ in 0..<40 {
            let inspect = try await engine.inspectExec(execID)
            if let code = inspect.exitCode, !inspect.running { return code }
            try await Task.sleep(for: delay)
            delay = min(delay * 2, .milliseconds(50))
        }
        throw CorralError(.engine, "the engine did not report an exit status for exec \(execID.prefix(12))")
    }

    /// Turns "no such container" and "not running" into errors that say what happened.
    private func explain(_ error: DockerEngineError) async throws -> CorralError {
        if error.isNotFound {
            return CorralError(
                .notFound, "sandbox \(sandbox) is gone: its container no longer exists",
                hint: "provision a new sandbox")
        }
        if error.isConflict {
            return notRunning(try? await engine.inspectContainer(container).state)
        }
        return error.corralError
    }

    static func seconds(_ duration: Duration) -> String {
        let value = duration.milliseconds / 1000
        return value == value.rounded() ? String(Int64(value)) : String(format: "%.3f", value)
    }
}

/// corral-init reports an out-of-memory kill on stderr, as a line of its own; this watches
/// the stream for it.
struct OOMWatch {
    static let marker = Array("corral-init: out of memory:".utf8)
    private(set) var reported = false
    private var tail: [UInt8] = []

    mutating func see(_ kind: StdioStream, _ bytes: [UInt8]) {
        guard kind == .stderr, !reported else { return }
        tail = Array((tail + bytes.suffix(512)).suffix(512))
        reported = Self.contains(tail)
    }

    static func contains(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= marker.count else { return false }
        for start in 0...(bytes.count - marker.count) where bytes[start..<start + marker.count].elementsEqual(marker) {
            return true
        }
        return false
    }
}

extension CommandStatus {
    /// A status from the wrapper's exit code: 124 after the timeout is a timeout, and a
    /// failure with corral-init's out-of-memory line is an OOM kill.
    init(exitCode: Int, elapsed: Duration, timeout: Duration?, oom: OOMWatch) {
        let timedOut = exitCode == 124 && timeout.map { elapsed >= $0 } == true
        self.init(
            exitCode: exitCode, timedOut: timedOut, oomKilled: oom.reported && exitCode != 0 && !timedOut,
            durationMilliseconds: elapsed.milliseconds)
    }
}

extension EngineExecTransport {
    /// A command through the engine's exec, as a `RunningCommand`: its output as it comes,
    /// its status at the end, and cancellation when its caller goes away. The engine's exec
    /// has no stdin stream here, no kill, and nothing that outlives the request, so stdin,
    /// terminals, detached commands, attach, listing and signals need the control connection.
    func start(_ command: SandboxCommand, stdin: Bool, terminal: TerminalSize?, detached: Bool) async throws
        -> RunningCommand
    {
        if stdin || terminal != nil || detached {
            let feature = stdin ? "stdin" : terminal != nil ? "a terminal" : "a detached command"
            throw Self.needsControl(feature, sandbox: sandbox)
        }
        guard !command.arguments.isEmpty else { throw CorralError.invalidArgument("no command to run") }
        let inbox = CommandInbox()
        let task = Task {
            do {
                let status = try await run(command) { stream, bytes in
                    await inbox.push(waiting: stream, bytes)
                    try Task.checkCancellation()
                }
                inbox.finish(.exited(status))
            } catch {
                inbox.finish(.failed(error))
            }
        }
        inbox.started(.started(pid: 0))
        return RunningCommand(
            id: CommandID.random(), pid: nil, arguments: command.arguments, isDetached: false, hasTerminal: false,
            acceptsInput: false, inbox: inbox, controls: EngineCommandControls(task: task, sandbox: sandbox))
    }

    func attach(_ command: CommandID, from offset: Int64, stdin: Bool) async throws -> RunningCommand {
        throw Self.needsControl("attaching to a command", sandbox: sandbox)
    }

    func commands() async throws -> [CommandInfo] {
        throw Self.needsControl("listing commands", sandbox: sandbox)
    }

    func signal(_ command: CommandID, _ signal: CommandSignal) async throws {
        throw Self.needsControl("signalling a command", sandbox: sandbox)
    }

    static func needsControl(_ feature: String, sandbox: SandboxID) -> CorralError {
        CorralError(
            .unsupported,
            "sandbox \(sandbox): \(feature) needs the sandbox's control connection, and this process runs its commands through the engine's exec",
            hint: "go through the service that made or adopted the sandbox (corral serve)")
    }
}

/// What the engine's exec can do for a running command: stop it, by cancelling its request
/// (its wrapper then kills its process group).
struct EngineCommandControls: CommandControls {
    let task: Task<Void, Never>
    let sandbox: SandboxID

    func write(_ bytes: [UInt8]) async throws { throw EngineExecTransport.needsControl("stdin", sandbox: sandbox) }
    func closeStdin() async throws { throw EngineExecTransport.needsControl("stdin", sandbox: sandbox) }
    func resize(_ size: TerminalSize) async throws {
        throw EngineExecTransport.needsControl("a terminal", sandbox: sandbox)
    }
    func signal(_ signal: CommandSignal) async throws {
        throw EngineExecTransport.needsControl("signalling a command", sandbox: sandbox)
    }
    func release() { task.cancel() }
    func lossError(command: CommandID, detached: Bool) async -> any Error {
        CorralError(.unavailable, "sandbox \(sandbox): command \(command) was lost")
    }
}
