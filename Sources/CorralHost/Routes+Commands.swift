import AsyncAlgorithms
import CorralAPI
import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import HTTPTypes
import Hummingbird

/// Commands that run on while their caller talks to them: stdin, terminals, detached commands,
/// re-attaching, listing and signals, over the sandbox's control connection.
///
/// Why separate calls rather than one full-duplex stream (a WebSocket): each direction is a
/// plain HTTP/1.1 request, so the command line's libcurl client drives all of it over
/// corral.sock or TCP+TLS without a second protocol stack; each direction has its own flow
/// control (a stalled reader never holds up stdin, and stdin waits for the command's
/// credit, not the output's); output is resumable by offset, so a dropped connection loses
/// nothing the command's buffer still holds; and a terminal needs nothing more than a resize
/// call beside the two streams.
extension HostAPI {
    package static let commandIDHeader: HTTPField.Name? = HTTPField.Name("Corral-Command-Id")
    package static let startOffsetHeader: HTTPField.Name? = HTTPField.Name("Corral-Start-Offset")
    package static let droppedBytesHeader: HTTPField.Name? = HTTPField.Name("Corral-Dropped-Bytes")

    package func addCommandRoutes(to group: RouterGroup<CorralRequestContext>) {
        group.get("sandboxes/:id/commands") { _, context -> Response in
            JSONResponse.make(try await sandbox(context).commands())
        }

        // Not detached: the answer is the command's stream, and the command stops when that
        // stream's client goes away. Detached: its handle at once; it runs on.
        group.post("sandboxes/:id/commands") { request, context -> Response in
            let body = try await decodeJSON(StartCommandRequest.self, from: request, context: context)
            let command = try body.sandboxCommand()
            let terminal = try body.checkedTerminal()
            let sandbox = try await sandbox(context)
            if body.detached == true {
                let running = try await sandbox.start(
                    command, stdin: body.stdin ?? false, terminal: terminal, detached: true)
                let handle = CommandHandle(running)
                running.detach()
                return JSONResponse.make(handle, status: 201)
            }
            let presence = await ClientPresence.of(context.channel)
            let running = try await sandbox.start(command, stdin: body.stdin ?? false, terminal: terminal)
            liveCommands.add(running, in: sandbox.id)
            return commandStream(running, of: sandbox.id, presence: presence, owner: true)
        }

        // Re-attach: what the command's buffer still holds from `offset` on, then what comes.
        // Leaving stops only this stream, never the command.
        group.get("sandboxes/:id/commands/:command/output") { request, context -> Response in
            let sandbox = try await sandbox(context)
            let id = try commandID(context)
            var offset: Int64 = 0
            if let text = request.uri.queryParameters["offset"] {
                guard let value = Int64(text), value >= 0 else {
                    throw CorralError.invalidArgument(
                        "offset must be a byte offset of 0 or more, got '\(text)'",
                        hint: "give the offset just past the last output byte you have, or 0 for all")
                }
                offset = value
            }
            let presence = await ClientPresence.of(context.channel)
            let running = try await sandbox.attach(id, from: offset)
            return commandStream(running, of: sandbox.id, presence: presence, owner: false)
        }

        // The body, streamed, goes to the command's stdin as it arrives; its end closes stdin
        // (EOF) unless `close=false`.
        group.post("sandboxes/:id/commands/:command/stdin") { request, context -> Response in
            let sandbox = try await sandbox(context)
            let id = try commandID(context)
            let close = request.uri.queryParameters["close"].map { $0 != "false" && $0 != "0" } ?? true
            let written = try await withCommand(id, of: sandbox, input: true) { command in
                var total: Int64 = 0
                for try await buffer in request.body {
                    try await command.write(stdin: Array(buffer.readableBytesView))
                    total += Int64(buffer.readableBytes)
                }
                if close { try await command.closeStdin() }
                return StdinWritten(bytes: total, closed: close)
            }
            return JSONResponse.make(written)
        }

        group.post("sandboxes/:id/commands/:command/resize") { request, context -> Response in
            let size = try await decodeJSON(TerminalSize.self, from: request, context: context).validated()
            let sandbox = try await sandbox(context)
            let id = try commandID(context)
            try await withCommand(id, of: sandbox, input: false) { try await $0.resize(size) }
            return JSONResponse.empty()
        }

        group.post("sandboxes/:id/commands/:command/signal") { request, context -> Response in
            let bytes = try await collect(request, limit: context.maxUploadSize)
            var name = "TERM"
            if !bytes.isEmpty {
                name = try await decodeJSON(SignalRequest.self, bytes: bytes).signal
            }
            let signal = try CommandSignal(parsing: name)
            let sandbox = try await sandbox(context)
            try await sandbox.signal(id: try commandID(context), signal)
            return JSONResponse.empty()
        }
    }

    package func commandID(_ context: CorralRequestContext) throws -> CommandID {
        let text = try context.parameters.require("command")
        do {
            return try CommandID(validating: text)
        } catch {
            throw CorralError.notFound(
                "command \(text) not found", hint: "list the sandbox's commands with GET …/commands")
        }
    }

    /// Runs `body` on the command: the `RunningCommand` this server holds for it, or else an
    /// attach (from the end of its output, which is drained) that is let go afterwards. An
    /// unknown command is 404, a finished one 409.
    package func withCommand<T: Sendable>(
        _ id: CommandID, of sandbox: Sandbox, input: Bool, _ body: (RunningCommand) async throws -> T
    ) async throws -> T {
        if let live = liveCommands.command(id, in: sandbox.id) {
            if input && !live.acceptsInput {
                throw CorralError(
                    .conflict, "command \(id) was started without stdin",
                    hint: "start it with \"stdin\": true to write to it")
            }
            return try await body(live)
        }
        let attached = try await sandbox.attach(id, from: Int64.max, stdin: input)
        let drain = Task { _ = try? await attached.wait() }
        defer {
            attached.detach()
            drain.cancel()
        }
        if input && !attached.acceptsInput {
            throw CorralError(
                .conflict, "command \(id) does not take input: its stdin is closed, or it was started without stdin",
                hint: "start a command with \"stdin\": true, and close its stdin only at the end")
        }
        return try await body(attached)
    }

    /// A command's stream: its handle as the first line (and in headers), then its output with
    /// offsets, then its status. The client going away stops the stream, and with it a command
    /// this stream owns that was not detached.
    package func commandStream(
        _ running: RunningCommand, of sandbox: SandboxID, presence: ClientPresence?, owner: Bool
    ) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/x-ndjson"
        for (name, value) in [
            (Self.commandIDHeader, running.id.rawValue), (Self.startOffsetHeader, String(running.startOffset)),
            (Self.droppedBytesHeader, String(running.droppedBytes)),
        ] {
            if let name { headers[name] = value }
        }
        let live = liveCommands
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                let lines = AsyncChannel<[UInt8]>()
                let follow = Task {
                    defer { lines.finish() }
                    do {
                        for try await chunk in running.output {
                            await lines.send(Self.line(CommandStreamEvent.output(chunk)))
                            try Task.checkCancellation()
                        }
                        let status = try await running.wait()
                        await lines.send(Self.line(CommandStreamEvent(status: status)))
                    } catch is CancellationError {
                    } catch let error as CorralError where error.code == .cancelled {
                    } catch {
                        await lines.send(Self.line(CommandStreamEvent(error: ErrorMiddleware.describe(error).1)))
                    }
                }
                let token = presence?.onGone { follow.cancel() }
                defer {
                    presence?.remove(token)
                    follow.cancel()
                    if owner { live.remove(running.id, in: sandbox) }
                    running.detach()
                }
                try await writer.write(
                    ByteBuffer(bytes: Self.line(CommandStreamEvent(command: CommandHandle(running)))))
                try await withTaskCancellationHandler {
                    for await line in lines {
                        try await writer.write(ByteBuffer(bytes: line))
                    }
                } onCancel: {
                    follow.cancel()
                }
                try await writer.finish(nil)
            })
    }

    package static func line(_ event: CommandStreamEvent) -> [UInt8] {
        var data = (try? JSONResponse.encoder.encode(event)) ?? Data()
        data.append(UInt8(ascii: "\n"))
        return Array(data)
    }
}

/// Decodes a JSON body already read, with errors that name the field.
package func decodeJSON<T: Decodable>(_ type: T.Type, bytes: [UInt8]) async throws -> T {
    do {
        return try JSONDecoder().decode(type, from: Data(bytes))
    } catch let error as DecodingError {
        throw CorralError.invalidArgument(ErrorMiddleware.describe(decoding: error))
    }
}
