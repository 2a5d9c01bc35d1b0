import AsyncAlgorithms
import CorralCore
import CorralSandbox
import Foundation
import Hummingbird
import NIOCore

/// envd's `process.Process` service over corral's commands: Start, Connect, List, SendInput,
/// StreamInput, CloseStdin, SendSignal and Update.
///
/// Pids are the commands' own pids inside the sandbox, as corral-init reports them. Commands
/// start detached, as envd's do: a client that goes away leaves them running, and Connect
/// reaches them again by pid.
package struct E2BProcessService: Sendable {
    package let plane: E2BDataPlane

    package var processes: E2BProcessTable { plane.processes }

    // MARK: Start and Connect

    package func start(_ request: Request, context: CorralRequestContext, sandbox: Sandbox) async -> Response {
        let interval = keepaliveInterval(request)
        // As envd does, the call's deadline is the command's: it is stopped when it passes,
        // though the stream ending earlier (the client going away) leaves it running.
        let deadline = E2BHeaders.value(request, "connect-timeout-ms").flatMap { Int64($0) }.flatMap {
            $0 > 0 ? Duration.milliseconds($0) : nil
        }
        let presence = await ClientPresence.of(context.channel)
        let message: JSONValue
        do {
            message = try await ConnectWire.singleRequest(request)
        } catch {
            return E2BStream.failed(ConnectError(converting: error))
        }
        let plane = self.plane
        return E2BStream.response(presence: presence, keepalive: interval) { frames in
            let config = message["process"] ?? .object([:])
            var arguments = [try config.protoString("cmd")]
            guard !arguments[0].isEmpty else { throw ConnectError.invalidArgument("process.cmd is required") }
            for argument in config["args"].flatMap(Self.array) ?? [] {
                guard let text = argument.stringValue else {
                    throw ConnectError.invalidArgument("args must be strings")
                }
                arguments.append(text)
            }
            var environment: [String: String] = [:]
            for (key, value) in config["envs"]?.objectValue ?? [:] {
                guard let text = value.stringValue else { throw ConnectError.invalidArgument("envs must be strings") }
                environment[key] = text
            }
            let home = await plane.home(of: sandbox)
            if environment["HOME"] == nil, home == E2BDataPlane.home { environment["HOME"] = home }
            let cwd = try config.protoString("cwd")
            let directory = cwd.isEmpty ? home : try await plane.resolve(cwd, in: sandbox)
            // The shell's `pwd` then says /home/user, not where a symlink to it leads.
            if environment["PWD"] == nil { environment["PWD"] = directory }
            var terminal: TerminalSize?
            if let pty = message["pty"], pty != .null {
                let size = pty["size"]
                terminal = TerminalSize(
                    rows: Int(size?["rows"]?.protoIntValue ?? 24), columns: Int(size?["cols"]?.protoIntValue ?? 80))
            }
            // envd's default for a request without the field is stdin open.
            let stdin = terminal != nil || (message["stdin"]?.boolValue ?? true)
            let tag = message["tag"]?.stringValue
            let command = try await sandbox.start(
                SandboxCommand(arguments, environment: environment, workingDirectory: directory, timeout: deadline),
                stdin: stdin,
                terminal: terminal, detached: true)
            let pid = command.pid ?? 0
            let pump = E2BCommandPump(command: command)
            let events = pump.subscribe()
            plane.processes.add(.init(pump: pump, config: config, tag: tag), sandbox: sandbox.id, pid: pid)
            let table = plane.processes
            let sandboxID = sandbox.id
            Task { await pump.run { table.remove(sandbox: sandboxID, pid: pid) } }
            defer { pump.unsubscribe() }
            await frames.send(Self.event(.object(["start": .object(["pid": .int(Int64(pid))])])))
            for await event in events {
                switch event {
                case .output(let chunk):
                    await frames.send(Self.event(Self.data(chunk, terminal: terminal != nil)))
                case .ended(let status):
                    await frames.send(Self.event(Self.end(status)))
                    return
                case .failed(let error):
                    throw error
                }
                try Task.checkCancellation()
            }
        }
    }

    package func connect(_ request: Request, context: CorralRequestContext, sandbox: Sandbox) async -> Response {
        let interval = keepaliveInterval(request)
        let presence = await ClientPresence.of(context.channel)
        let message: JSONValue
        do {
            message = try await ConnectWire.singleRequest(request)
        } catch {
            return E2BStream.failed(ConnectError(converting: error))
        }
        let service = self
        return E2BStream.response(presence: presence, keepalive: interval) { frames in
            let (pid, info) = try await service.find(message["process"], in: sandbox)
            // envd's Connect streams what comes from now on.
            let attached = try await sandbox.attach(info.id, from: info.outputEnd)
            defer { attached.detach() }
            await frames.send(Self.event(.object(["start": .object(["pid": .int(Int64(pid))])])))
            while let chunk = try await attached.nextChunk() {
                await frames.send(Self.event(Self.data(chunk, terminal: info.terminal)))
                try Task.checkCancellation()
            }
            await frames.send(Self.event(Self.end(try await attached.wait())))
        }
    }

    // MARK: Unary calls

    package func list(sandbox: Sandbox) async throws -> JSONValue {
        let running = try await sandbox.commands().filter { $0.state == .running }
        let table = processes
        let listed: [JSONValue] = running.map { info in
            let entry = table.entry(sandbox: sandbox.id, pid: info.pid)
            var config: JSONValue =
                entry?.config
                ?? .object([
                    "cmd": .string(info.arguments.first ?? ""),
                    "args": .array(info.arguments.dropFirst().map { .string($0) }),
                ])
            if case .object(var fields) = config, fields["envs"] == nil {
                fields["envs"] = .object([:])
                config = .object(fields)
            }
            var fields: [String: JSONValue] = ["config": config, "pid": .int(Int64(info.pid))]
            if let tag = entry?.tag { fields["tag"] = .string(tag) }
            return .object(fields)
        }
        return .object(["processes": .array(listed)])
    }

    package func sendInput(_ message: JSONValue, sandbox: Sandbox) async throws -> JSONValue {
        let entry = try held(message["process"], in: sandbox)
        try await write(message["input"], to: entry)
        return .object([:])
    }

    package func closeStdin(_ message: JSONValue, sandbox: Sandbox) async throws -> JSONValue {
        let entry = try held(message["process"], in: sandbox)
        try await entry.command.closeStdin()
        return .object([:])
    }

    package func sendSignal(_ message: JSONValue, sandbox: Sandbox) async throws -> JSONValue {
        let (_, info) = try await find(message["process"], in: sandbox)
        let signal: CommandSignal
        switch message["signal"] {
        case .string("SIGNAL_SIGKILL"), .int(9): signal = .kill
        case .string("SIGNAL_SIGTERM"), .int(15): signal = .terminate
        default: throw ConnectError.invalidArgument("signal must be SIGNAL_SIGTERM or SIGNAL_SIGKILL")
        }
        try await sandbox.signal(id: info.id, signal)
        return .object([:])
    }

    package func update(_ message: JSONValue, sandbox: Sandbox) async throws -> JSONValue {
        let entry = try held(message["process"], in: sandbox)
        if let size = message["pty"]?["size"] {
            guard let rows = size["rows"]?.protoIntValue, let columns = size["cols"]?.protoIntValue else {
                throw ConnectError.invalidArgument("pty.size needs rows and cols")
            }
            try await entry.command.resize(rows: Int(rows), columns: Int(columns))
        }
        return .object([:])
    }

    /// StreamInput: a client stream of a start (the process), then input, in order.
    package func streamInput(_ request: Request, sandbox: Sandbox) async -> Response {
        do {
            var reader = ConnectWire.EnvelopeReader()
            var entry: E2BProcessTable.Entry?
            for try await buffer in request.body {
                reader.append(buffer.readableBytesView)
                while let (flags, payload) = try reader.next() {
                    guard flags & ConnectWire.endStreamFlag == 0 else { continue }
                    let message = try ConnectWire.decode(payload)
                    if let start = message["start"] {
                        entry = try held(start["process"], in: sandbox)
                    } else if let data = message["data"] {
                        guard let entry else {
                            throw ConnectError.invalidArgument("the stream must begin with a start event")
                        }
                        try await write(data["input"], to: entry)
                    }
                }
            }
            guard !reader.hasPartial else { throw ConnectError.invalidArgument("the last envelope is cut short") }
            return Response(
                status: .ok, headers: ConnectWire.streamHeaders,
                body: ResponseBody(
                    byteBuffer: ByteBuffer(bytes: ConnectWire.envelope(.object([:])) + ConnectWire.endStream(nil))))
        } catch {
            return E2BStream.failed(ConnectError(converting: error))
        }
    }

    // MARK: Helpers

    /// The running command a ProcessSelector names: by pid, or by the tag it was started with.
    package func find(_ selector: JSONValue?, in sandbox: Sandbox) async throws -> (Int, CommandInfo) {
        let pid = try pid(selector, in: sandbox)
        let commands = try await sandbox.commands()
        guard let info = commands.last(where: { $0.pid == pid && $0.state == .running }) else {
            throw ConnectError.notFound("process with pid \(pid) not found")
        }
        return (pid, info)
    }

    /// A command this service started and still holds the input of.
    package func held(_ selector: JSONValue?, in sandbox: Sandbox) throws -> E2BProcessTable.Entry {
        let pid = try pid(selector, in: sandbox)
        guard let entry = processes.entry(sandbox: sandbox.id, pid: pid) else {
            throw ConnectError.notFound("process with pid \(pid) not found")
        }
        return entry
    }

    package func pid(_ selector: JSONValue?, in sandbox: Sandbox) throws -> Int {
        if let pid = selector?["pid"]?.protoIntValue { return Int(pid) }
        if let tag = selector?["tag"]?.stringValue {
            guard let pid = processes.pid(sandbox: sandbox.id, tag: tag) else {
                throw ConnectError.notFound("process with tag \(tag) not found")
            }
            return pid
        }
        throw ConnectError.invalidArgument("process needs a pid or a tag")
    }

    package func write(_ input: JSONValue?, to entry: E2BProcessTable.Entry) async throws {
        guard let input, let bytes = (input["stdin"] ?? input["pty"])?.protoBytesValue else {
            throw ConnectError.invalidArgument("input needs stdin or pty bytes, base64")
        }
        do {
            try await entry.command.write(stdin: bytes)
        } catch let error as CorralError where error.code == .invalidArgument {
            throw ConnectError(code: "failed_precondition", message: "the process was started without stdin")
        }
    }

    package func keepaliveInterval(_ request: Request) -> Duration {
        let seconds = E2BHeaders.value(request, "keepalive-ping-interval").flatMap { Int($0) } ?? 50
        return .seconds(min(max(seconds, 1), 3600))
    }

    package static func array(_ value: JSONValue) -> [JSONValue]? {
        if case .array(let items) = value { return items }
        return nil
    }

    /// A StartResponse/ConnectResponse: `{"event": {...}}`.
    package static func event(_ event: JSONValue) -> [UInt8] { ConnectWire.envelope(.object(["event": event])) }

    package static func data(_ chunk: CommandOutputChunk, terminal: Bool) -> JSONValue {
        let stream = terminal ? "pty" : (chunk.stream == .stderr ? "stderr" : "stdout")
        return .object(["data": .object([stream: .protoBytes(chunk.bytes)])])
    }

    /// envd's end event: the exit code, and Go's description of how the process ended.
    package static func end(_ status: CommandStatus) -> JSONValue {
        var fields: [String: JSONValue] = [
            "exitCode": .int(Int64(status.exitCode)), "exited": .bool(true),
            "status": .string("exit status \(status.exitCode)"),
        ]
        if status.timedOut { fields["error"] = .string("the command timed out") }
        if status.oomKilled { fields["error"] = .string("the command was killed: out of memory") }
        return .object(["end": .object(fields)])
    }
}

/// A server-streaming Connect response fed by a producer, with keepalive messages while it is
/// quiet and the end-of-stream envelope last. The producer runs in a task that is cancelled
/// when the client goes away.
package enum E2BStream {
    package static let keepalive = E2BProcessService.event(.object(["keepalive": .object([:])]))

    package static func response(
        presence: ClientPresence?, keepalive interval: Duration,
        keepaliveFrame: [UInt8] = E2BStream.keepalive,
        produce: @escaping @Sendable (AsyncChannel<[UInt8]>) async throws -> Void
    ) -> Response {
        Response(
            status: .ok, headers: ConnectWire.streamHeaders,
            body: ResponseBody { writer in
                let frames = AsyncChannel<[UInt8]>()
                let work = Task {
                    var failure: ConnectError?
                    do {
                        try await produce(frames)
                    } catch {
                        failure = ConnectError(converting: error)
                    }
                    if !Task.isCancelled { await frames.send(ConnectWire.endStream(failure)) }
                    frames.finish()
                }
                let pinger = Task {
                    while !Task.isCancelled {
                        try await Task.sleep(for: interval)
                        await frames.send(keepaliveFrame)
                    }
                }
                let token = presence?.onGone { work.cancel() }
                defer {
                    presence?.remove(token)
                    work.cancel()
                    pinger.cancel()
                    frames.finish()
                }
                try await withTaskCancellationHandler {
                    for await frame in frames {
                        try await writer.write(ByteBuffer(bytes: frame))
                    }
                } onCancel: {
                    work.cancel()
                }
                try await writer.finish(nil)
            })
    }

    /// A stream that fails before it starts: status 200, and the error in the last envelope.
    package static func failed(_ error: ConnectError) -> Response {
        Response(
            status: .ok, headers: ConnectWire.streamHeaders,
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: ConnectWire.endStream(error))))
    }
}
