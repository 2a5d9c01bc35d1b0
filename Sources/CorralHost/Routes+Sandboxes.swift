import AsyncAlgorithms
import CorralAPI
import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import Hummingbird

extension HostAPI {
    package func addSandboxRoutes(to group: RouterGroup<CorralRequestContext>) {
        group.post("sandboxes") { request, context -> Response in
            let tenant = try context.requireTenant()
            let body = try await decodeJSON(CreateSandboxRequest.self, from: request, context: context)
            let provisionRequest = try body.provisionRequest(tenant: tenant)
            if let session = provisionRequest.session { try await control.requireSession(session, tenant: tenant) }
            let provisioner = self.provisioner
            let sandbox = try await control.admitSandbox(tenant) { try await provisioner.provision(provisionRequest) }
            try await control.keepOnlyIfTenantRemains(context) { try? await sandbox.remove() }
            return JSONResponse.make(CreatedSandbox(sandbox: sandbox), status: 201)
        }

        group.get("sandboxes") { _, context -> Response in
            JSONResponse.make(try await provisioner.list(tenant: try context.requireTenant()))
        }

        group.get("sandboxes/:id") { _, context -> Response in
            JSONResponse.make(try await sandbox(context).info())
        }

        group.delete("sandboxes/:id") { _, context -> Response in
            try await sandbox(context).remove()
            let tenant = try context.requireTenant()
            // Other replicas count this one's sandboxes from what it published.
            await control.sandboxRemoved(tenant)
            return JSONResponse.empty()
        }

        // A client that goes away stops its command: execute and exec run in a task that is
        // cancelled when the connection's input closes, and the sandbox layer kills a cancelled
        // command.
        group.post("sandboxes/:id/execute") { request, context -> Response in
            let body = try await decodeJSON(ExecuteRequest.self, from: request, context: context)
            let sandbox = try await sandbox(context)
            let started = ContinuousClock.now
            let presence = await ClientPresence.of(context.channel)
            let output = try await cancellingWhenClientLeaves(presence) {
                try await sandbox.execute(tool: body.name, input: body.input)
            }
            // Unknown names would grow the label set without bound.
            let tool = sandbox.toolNames.contains(body.name) ? body.name : "unknown"
            serverMetrics.executed(
                tool: tool, isError: output.isError, seconds: (ContinuousClock.now - started).milliseconds / 1000)
            return JSONResponse.make(output)
        }

        // The streaming variant: a command's output as NDJSON lines while it runs, then how it
        // ended. Errors after the headers are sent come as a last line with `error`.
        group.post("sandboxes/:id/exec") { request, context -> Response in
            let body = try await decodeJSON(ExecRequest.self, from: request, context: context)
            let command = try body.sandboxCommand()
            let sandbox = try await sandbox(context)
            let presence = await ClientPresence.of(context.channel)
            var headers = HTTPFields()
            headers[.contentType] = "application/x-ndjson"
            return Response(
                status: .ok, headers: headers,
                body: ResponseBody { writer in
                    // The command runs in a task of its own, so that it can be cancelled when the
                    // client leaves even while it prints nothing. Its lines reach this writer one
                    // at a time: a send waits until the line is taken, so a flood waits for the
                    // client as before.
                    let lines = AsyncChannel<[UInt8]>()
                    let run = Task {
                        defer { lines.finish() }
                        do {
                            let status = try await sandbox.run(command) { stream, bytes in
                                await lines.send(Self.line(ExecStreamEvent.output(stream, bytes)))
                                try Task.checkCancellation()
                            }
                            await lines.send(Self.line(ExecStreamEvent.finished(status)))
                        } catch is CancellationError {
                        } catch let error as CorralError where error.code == .cancelled {
                        } catch {
                            await lines.send(
                                Self.line(ExecStreamEvent.failed(ErrorMiddleware.describe(error).1.corralError)))
                        }
                    }
                    let token = presence?.onGone { run.cancel() }
                    defer {
                        presence?.remove(token)
                        run.cancel()
                    }
                    try await withTaskCancellationHandler {
                        for await line in lines {
                            try await writer.write(ByteBuffer(bytes: line))
                        }
                    } onCancel: {
                        run.cancel()
                    }
                    try await writer.finish(nil)
                })
        }

        // Files in: a tar into a directory (checked entry by entry), or one file's bytes.
        group.put("sandboxes/:id/archive") { request, context -> Response in
            let path = try requireQuery(request, "path")
            let sandbox = try await sandbox(context)
            let channel = ByteChannel()
            let limit = limits.maxArchiveBytes
            // The copy may end before the body does: a path it refuses, or a tar whose end
            // comes before the body's. Then the channel is abandoned, the loop below stops
            // sending (a send would otherwise wait for ever for a reader that has gone), the
            // answer goes out at once, and the rest of the body is read and dropped.
            async let copied: Int64 = Self.copyIn(tar: channel, to: path, of: sandbox)
            do {
                var total: Int64 = 0
                for try await buffer in request.body {
                    total += Int64(buffer.readableBytes)
                    guard total <= limit else {
                        throw CorralError(.payloadTooLarge, "the archive is larger than \(ByteSize(bytes: limit))")
                    }
                    do {
                        try await channel.send(Array(buffer.readableBytesView))
                    } catch {
                        break
                    }
                }
                channel.finish()
            } catch {
                channel.finish(throwing: error)
                _ = try? await copied
                throw error
            }
            do {
                _ = try await copied
            } catch {
                throw fileError(error)
            }
            return JSONResponse.empty()
        }

        group.get("sandboxes/:id/stat") { request, context -> Response in
            let path = try requireQuery(request, "path")
            guard let stat = try await fileErrors({ try await sandbox(context).stat(path) }) else {
                return JSONResponse.make(APIErrorBody(code: "no_such_path", message: "nothing at \(path)"), status: 404)
            }
            return JSONResponse.make(stat)
        }

        group.get("sandboxes/:id/archive") { request, context -> Response in
            let path = try requireQuery(request, "path")
            let sandbox = try await sandbox(context)
            // Look first, so that a missing path is a 404 rather than a broken stream.
            guard try await fileErrors({ try await sandbox.stat(path) }) != nil else {
                throw CorralError.notFound("no such file or directory in sandbox \(sandbox.id): \(path)")
            }
            // The copy starts before the answer does: what fails before its first byte (the
            // root, a special file, a file the sandbox's user cannot read) is an error status,
            // not a 200 whose stream breaks. A bounded channel keeps the flow control.
            let channel = ByteChannel(capacity: 256 << 10)
            let copy = Task {
                do {
                    try await sandbox.copyOut(path, tarChunks: { try await channel.send($0) })
                    channel.finish()
                } catch {
                    channel.finish(throwing: error)
                }
            }
            let first: [UInt8]?
            do {
                first = try await fileErrors { try await channel.receive() }
            } catch {
                channel.cancel()
                throw error
            }
            var headers = HTTPFields()
            headers[.contentType] = "application/x-tar"
            return Response(
                status: .ok, headers: headers,
                body: ResponseBody { writer in
                    defer {
                        channel.cancel()
                        copy.cancel()
                    }
                    var chunk = first
                    while let bytes = chunk {
                        try await writer.write(ByteBuffer(bytes: bytes))
                        chunk = try await channel.receive()
                    }
                    try await writer.finish(nil)
                })
        }
    }

    /// The caller's sandbox named in the path. Another tenant's is as absent as a missing one.
    ///
    /// Whose a sandbox is comes from its record, a local file written when it was handed out,
    /// rather than from the engine: an execute pays no extra engine round trip. A container
    /// that vanished behind its record still answers, as anywhere, with tool errors that say so.
    package func sandbox(_ context: CorralRequestContext) async throws -> Sandbox {
        let tenant = try context.requireTenant()
        let id = try SandboxID(validating: try context.parameters.require("id"))
        guard let record = try? provisioner.records().read(id), record.tenant == tenant else {
            throw CorralError.notFound("sandbox \(id) not found", hint: "list sandboxes with GET /v1/sandboxes")
        }
        return provisioner.handle(id, tenant: tenant)
    }

    package static func line(_ event: ExecStreamEvent) -> [UInt8] {
        var data = (try? JSONResponse.encoder.encode(event)) ?? Data()
        data.append(UInt8(ascii: "\n"))
        return Array(data)
    }

    /// Copies a tar from `channel` into the sandbox, and abandons the channel when the copy
    /// ends, however it ends, so that its sender never waits on a reader that has gone.
    package static func copyIn(tar channel: ByteChannel, to path: String, of sandbox: Sandbox) async throws -> Int64 {
        defer { channel.cancel() }
        return try await sandbox.copyIn(tar: { try channel.blockingReceive() }, to: path)
    }
}

/// Reads a JSON body of at most the context's upload size, with errors that name the field.
package func decodeJSON<T: Decodable>(_ type: T.Type, from request: Request, context: CorralRequestContext) async throws
    -> T
{
    let bytes = try await collect(request, limit: context.maxUploadSize)
    guard !bytes.isEmpty else { throw CorralError.invalidArgument("the request has no body; send a JSON object") }
    let decoder = JSONDecoder()
    decoder.dateDecodingStrategy = .iso8601
    do {
        return try decoder.decode(type, from: Data(bytes))
    } catch let error as DecodingError {
        throw CorralError.invalidArgument(ErrorMiddleware.describe(decoding: error))
    }
}

package func collect(_ request: Request, limit: Int) async throws -> [UInt8] {
    var bytes: [UInt8] = []
    for try await buffer in request.body {
        guard bytes.count + buffer.readableBytes <= limit else {
            throw CorralError(.payloadTooLarge, "the request body is larger than \(ByteSize(bytes: Int64(limit)))")
        }
        bytes.append(contentsOf: buffer.readableBytesView)
    }
    return bytes
}

package func requireQuery(_ request: Request, _ name: String) throws -> String {
    guard let value = request.uri.queryParameters[Substring(name)], !value.isEmpty else {
        throw CorralError.invalidArgument("the query parameter '\(name)' is required")
    }
    return String(value)
}
