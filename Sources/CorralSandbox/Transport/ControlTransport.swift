import ControlProtocol
import CorralCore
import DockerEngine
import Foundation
import Synchronization

/// Runs commands over the sandbox's control connection when this process holds one, and
/// through the engine's exec otherwise (or when a command could not be sent at all). What
/// only the control connection can do (stdin, terminals, detached commands, attach, listing,
/// signals) waits a moment for corral-init to dial in, and is refused clearly without it.
struct ControlTransport: SandboxTransport {
    let engine: EngineExecTransport
    let channels: ControlChannels
    /// How long a request that needs the control connection waits for corral-init to dial in
    /// (after a restart, it redials within half a second).
    var connectionWait: Duration = .seconds(5)

    var sandbox: SandboxID { engine.sandbox }

    func run(
        _ command: SandboxCommand, output: (StdioStream, [UInt8]) async throws -> Void
    ) async throws -> CommandStatus {
        guard let connection = channels.connection(for: sandbox) else {
            // corral-init has not proved itself: whatever runs now must not find its key.
            channels.withdrawKey(sandbox)
            return try await engine.run(command, output: output)
        }
        let records = engine.records
        records?.touch(sandbox)
        defer { records?.touch(sandbox) }
        let running: RunningCommand
        do {
            running = try await start(command, stdin: false, terminal: nil, detached: false, on: connection)
        } catch let notStarted as CommandInbox.NotStarted where !notStarted.sent {
            return try await engine.run(command, output: output)
        }
        while let chunk = try await running.nextChunk() {
            try Task.checkCancellation()
            try await output(chunk.stream, chunk.bytes)
        }
        return try await running.wait()
    }

    func start(_ command: SandboxCommand, stdin: Bool, terminal: TerminalSize?, detached: Bool) async throws
        -> RunningCommand
    {
        let needsControl = stdin || terminal != nil || detached
        guard
            let connection = try await connection(
                waiting: needsControl, for: "a command with stdin, a terminal or detached")
        else {
            channels.withdrawKey(sandbox)
            return try await engine.start(command, stdin: stdin, terminal: terminal, detached: detached)
        }
        engine.records?.touch(sandbox)
        do {
            return try await start(command, stdin: stdin, terminal: terminal, detached: detached, on: connection)
        } catch let notStarted as CommandInbox.NotStarted where !notStarted.sent && !needsControl {
            return try await engine.start(command, stdin: stdin, terminal: terminal, detached: detached)
        }
    }

    private func start(
        _ command: SandboxCommand, stdin: Bool, terminal: TerminalSize?, detached: Bool,
        on connection: ControlConnection
    ) async throws -> RunningCommand {
        guard !command.arguments.isEmpty else { throw CorralError.invalidArgument("no command to run") }
        let size = try terminal.map { try $0.validated() }
        let variables = try engine.environment(for: command)
        let id = CommandID.random()
        let slot = StreamSlot()
        let inbox = CommandInbox { slot.stream?.consumed($0) }
        let sink = ControlCommandSink(inbox: inbox, sandbox: sandbox, command: id)
        guard let stream = connection.openStream(sink: sink, takesInput: stdin) else {
            throw CommandInbox.NotStarted(sent: false)
        }
        slot.stream = stream
        let request = ExecRequest(
            commandID: id.rawValue, arguments: command.arguments,
            environment: variables.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" },
            workingDirectory: command.workingDirectory ?? engine.environment.workspace,
            timeoutMilliseconds: command.timeout.map { UInt64(max($0.milliseconds.rounded(.up), 1)) } ?? 0,
            graceMilliseconds: UInt64(max(engine.killGrace.milliseconds, 0)), stdin: stdin, detached: detached,
            terminal: size.flatMap { WindowSize(rows: $0.rows, columns: $0.columns) }, outputWindow: stream.window)
        guard let encoded = request.encoded() else {
            stream.cancel()
            throw CorralError.invalidArgument("a command, its arguments and its environment cannot hold NUL bytes")
        }
        guard encoded.count <= ControlFrameHeader.maxPayload else {
            stream.cancel()
            throw CorralError.invalidArgument(
                "the command and its environment are larger than \(ControlFrameHeader.maxPayload >> 20) MiB")
        }
        stream.open(.exec, payload: encoded)
        let controls = ControlCommandControls(stream: stream, command: id, explain: explainLoss)
        let pid: Int
        do {
            guard case .started(let started) = try await inbox.awaitStart() else {
                throw CorralError(.internalError, "corral-init answered an exec with an attach report")
            }
            pid = started
        } catch let error as CorralError {
            // The request reached corral-init, which could not start it.
            throw error
        } catch let notStarted as CommandInbox.NotStarted {
            if !notStarted.sent { throw notStarted }
            throw await explainLoss(id, detached)
        }
        return RunningCommand(
            id: id, pid: pid, arguments: command.arguments, isDetached: detached, hasTerminal: size != nil,
            acceptsInput: stdin, inbox: inbox, controls: controls)
    }

    func attach(_ command: CommandID, from offset: Int64, stdin: Bool) async throws -> RunningCommand {
        let connection = try await requireConnection(for: "attaching to a command")
        let slot = StreamSlot()
        let inbox = CommandInbox { slot.stream?.consumed($0) }
        let sink = ControlCommandSink(inbox: inbox, sandbox: sandbox, command: command)
        guard let stream = connection.openStream(sink: sink, takesInput: stdin) else {
            throw await explainLoss(command, true)
        }
        slot.stream = stream
        let request = AttachRequest(
            commandID: command.rawValue, offset: max(offset, 0), stdin: stdin, outputWindow: stream.window)
        stream.open(.attach, payload: request.encoded())
        let report: AttachedReport
        do {
            guard case .attached(let attached) = try await inbox.awaitStart() else {
                throw CorralError(.internalError, "corral-init answered an attach with an exec report")
            }
            report = attached
        } catch is CommandInbox.NotStarted {
            throw await explainLoss(command, true)
        }
        let record = report.command
        return RunningCommand(
            id: command, pid: record.pid, arguments: record.arguments, isDetached: record.detached,
            hasTerminal: record.terminal, acceptsInput: stdin && record.stdinOpen, startOffset: report.startOffset,
            droppedBytes: report.dropped, inbox: inbox,
            controls: ControlCommandControls(stream: stream, command: command, explain: explainLoss))
    }

    func commands() async throws -> [CommandInfo] {
        let connection = try await requireConnection(for: "listing commands")
        do {
            return try await ControlRequests.commands(on: connection).compactMap(CommandInfo.init(record:))
        } catch is FrameInbox.Closed {
            throw await sandboxLoss(doing: "listing its commands")
        }
    }

    func signal(_ command: CommandID, _ signal: CommandSignal) async throws {
        let connection = try await requireConnection(for: "signalling a command")
        do {
            try await ControlRequests.signal(command, signal, on: connection)
        } catch is FrameInbox.Closed {
            throw await explainLoss(command, true)
        }
    }

    // MARK: The connection

    /// The control connection, waiting up to `connectionWait` for corral-init to dial in when
    /// `waiting`; nil without one. A running sandbox this process does not listen for yet (a
    /// restarted service asked before its start-up pass adopted it) is adopted here.
    func connection(waiting: Bool, for purpose: String) async throws -> ControlConnection? {
        if let connection = channels.connection(for: sandbox) { return connection }
        guard waiting else { return nil }
        if !channels.isListening(sandbox), let directory = engine.environment.gatewayDirectory(for: sandbox),
            FileManager.default.fileExists(atPath: directory.path)
        {
            do {
                try await engine.checkRunning()
                try await channels.adopt(sandbox, directory: directory)
            } catch {
                // Stopped, gone, or without a kept key: the caller's error says which.
            }
        }
        guard channels.isListening(sandbox) else { return nil }
        _ = await channels.waitForConnection(sandbox, timeout: connectionWait, withdrawingKey: false)
        return channels.connection(for: sandbox)
    }

    func requireConnection(for purpose: String) async throws -> ControlConnection {
        if let connection = try await connection(waiting: true, for: purpose) { return connection }
        throw await sandboxLoss(doing: purpose)
    }

    /// Why there is no control connection to do `purpose` with: the sandbox is gone or
    /// stopped (its commands with it), or this process does not hold its connection.
    func sandboxLoss(doing purpose: String) async -> CorralError {
        do {
            try await engine.checkRunning()
        } catch let error as CorralError {
            return CorralError(
                error.code, "\(error.message); its commands are lost with it",
                hint: error.hint ?? "provision a new sandbox")
        } catch {
            return CorralError(.unavailable, "sandbox \(sandbox): \(purpose) failed: \(error)")
        }
        return CorralError(
            .unsupported,
            "sandbox \(sandbox): \(purpose) needs its control connection, which this process does not hold",
            hint: "go through the service that made or adopted the sandbox; the engine's exec cannot do it")
    }

    /// What became of a command its connection lost: gone with its sandbox, stopped with the
    /// connection, or running on (detached) until someone attaches again.
    @Sendable func explainLoss(_ command: CommandID, _ detached: Bool) async -> any Error {
        do {
            try await engine.checkRunning()
        } catch let error as CorralError {
            return CorralError(error.code, "\(error.message); command \(command) is lost", hint: error.hint)
        } catch {
            return error
        }
        if detached {
            return CorralError(
                .unavailable,
                "the control connection to sandbox \(sandbox) closed; detached command \(command) runs on inside it",
                hint: "attach to it again: corral-init dials back in at once")
        }
        return CorralError(
            .unavailable,
            "sandbox \(sandbox): its control connection closed while command \(command) ran, which stopped it",
            hint: "run the command again")
    }
}

/// Where a command's inbox finds its stream once it is open.
final class StreamSlot: Sendable {
    private let slot = Mutex<ControlStream?>(nil)
    var stream: ControlStream? {
        get { slot.withLock { $0 } }
        set { slot.withLock { $0 = newValue } }
    }
}

extension CommandInfo {
    init?(record: CommandRecord) {
        guard let id = CommandID(record.commandID) else { return nil }
        self.init(
            id: id, pid: record.pid, arguments: record.arguments, state: record.exit == nil ? .running : .exited,
            started: Date(timeIntervalSince1970: Double(record.startedMilliseconds) / 1000),
            ended: record.exit.map { Date(timeIntervalSince1970: Double($0.endedMilliseconds) / 1000) },
            status: record.exit.map { exit in
                CommandStatus(
                    exitCode: exit.status, timedOut: exit.timedOut,
                    oomKilled: exit.outOfMemory && exit.status != 0 && !exit.timedOut,
                    durationMilliseconds: Double(exit.endedMilliseconds - record.startedMilliseconds))
            }, detached: record.detached, terminal: record.terminal, outputEnd: record.outputEnd,
            retainedStart: record.retainedStart)
    }
}
