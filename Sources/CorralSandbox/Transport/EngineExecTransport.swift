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
        var variables = try records?.read(sandbox)?.env ?? [:]
        variables.merge(command.environment) { _, own in own }
        records?.touch(sandbox)
        defer { records?.touch(sandbox) }
        let request = ExecCreateRequest(
            cmd: argv, env: variables.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" },
            workingDir: command.workingDirectory ?? environment.workspace, user: environment.user)
        let clock = ContinuousClock()
        let started = clock.now
        let execID: String
        do {
            execID = try await engine.createExec(container: container, request)
        } catch let error as DockerEngineError {
            throw try await explain(error)
        }
        // corral-init enforces the timeout inside the sandbox. Should the stream outlive it by
        // far (a wedged engine), stop waiting rather than hang the caller.
        let streamLimit = command.timeout.map { $0 + killGrace + .seconds(10) }
        // corral-init reports an out-of-memory kill on stderr, as a line of its own.
        var oomReported = false
        var stderrTail: [UInt8] = []
        do {
            try await engine.withExecOutput(execID, timeout: streamLimit) { stream in
                for try await (kind, bytes) in stream {
                    if kind == .stderr {
                        stderrTail = Array((stderrTail + bytes).suffix(512))
                        if !oomReported, Self.containsOOMMarker(stderrTail) { oomReported = true }
                    }
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
        let elapsed = clock.now - started
        let timedOut = exitCode == 124 && command.timeout.map { elapsed >= $0 } == true
        let oomKilled = oomReported && exitCode != 0 && !timedOut
        return CommandStatus(
            exitCode: exitCode, timedOut: timedOut, oomKilled: oomKilled, durationMilliseconds: elapsed.milliseconds)
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
            var why = "it is not running"
            if let state = try? await engine.inspectContainer(container).state {
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
        return error.corralError
    }

    static let oomMarker = Array("corral-init: out of memory:".utf8)

    static func containsOOMMarker(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= oomMarker.count else { return false }
        for start in 0...(bytes.count - oomMarker.count)
        where bytes[start..<start + oomMarker.count].elementsEqual(oomMarker) {
            return true
        }
        return false
    }

    static func seconds(_ duration: Duration) -> String {
        let value = duration.milliseconds / 1000
        return value == value.rounded() ? String(Int64(value)) : String(format: "%.3f", value)
    }
}
