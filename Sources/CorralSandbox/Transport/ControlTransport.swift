import CorralCore
import DockerEngine
import Foundation

/// Runs a command over the sandbox's control connection when this process holds one, and
/// through the engine's exec otherwise (or when the command could not be sent at all).
struct ControlTransport: SandboxTransport {
    let engine: EngineExecTransport
    let channels: ControlChannels

    func run(
        _ command: SandboxCommand, output: (StdioStream, [UInt8]) async throws -> Void
    ) async throws -> CommandStatus {
        guard let connection = channels.connection(for: engine.sandbox) else {
            // corral-init has not proved itself: whatever runs now must not find its key.
            channels.withdrawKey(engine.sandbox)
            return try await engine.run(command, output: output)
        }
        guard !command.arguments.isEmpty else { throw CorralError.invalidArgument("no command to run") }
        let variables = try engine.environment(for: command)
        let records = engine.records
        records?.touch(engine.sandbox)
        defer { records?.touch(engine.sandbox) }
        let clock = ContinuousClock()
        let started = clock.now
        var oom = OOMWatch()
        let ending: ControlConnection.Ending
        do {
            ending = try await connection.run(
                arguments: command.arguments, environment: variables,
                workingDirectory: command.workingDirectory ?? engine.environment.workspace, timeout: command.timeout,
                grace: engine.killGrace
            ) { kind, bytes in
                oom.see(kind, bytes)
                try await output(kind, bytes)
            }
        } catch is ControlConnection.NotSent {
            return try await engine.run(command, output: output)
        }
        switch ending {
        case .exited(let code):
            return CommandStatus(exitCode: code, elapsed: clock.now - started, timeout: command.timeout, oom: oom)
        case .failed(let why):
            try await engine.checkRunning()
            throw CorralError(.unavailable, "sandbox \(engine.sandbox) could not start the command: \(why)")
        case .lost:
            try await engine.checkRunning()
            throw CorralError(
                .unavailable,
                "sandbox \(engine.sandbox): its control connection closed while the command ran, which stopped it",
                hint: "run the command again")
        }
    }
}
