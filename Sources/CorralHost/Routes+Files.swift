import AsyncAlgorithms
import CorralAPI
import CorralCore
import CorralSandbox
import Foundation
import Hummingbird
import Synchronization

/// Files anywhere the sandbox's user may write (the workspace, /tmp, HOME), over the control
/// connection when the service holds it (the engine's archive API, which sees only the
/// workspace, otherwise). Bytes stream both ways; the sandbox's own errors pass through with
/// their errno name: ENOENT 404, EACCES/EPERM/EROFS 403, ENOSPC/EDQUOT 507, EISDIR 400.
extension HostAPI {
    package func addFileRoutes(to group: RouterGroup<CorralRequestContext>) {
        // One file's bytes in, streamed; it replaces the file once all of it arrived.
        group.put("sandboxes/:id/files") { request, context -> Response in
            let path = try requireQuery(request, "path")
            let mode = try fileMode(request)
            let sandbox = try await sandbox(context)
            let limit = Int64(limits.maxFileBytes)
            let total = Atomic<Int64>(0)
            let chunks = request.body.map { buffer -> [UInt8] in
                guard total.add(Int64(buffer.readableBytes), ordering: .relaxed).newValue <= limit else {
                    throw CorralError(
                        .payloadTooLarge, "the file is larger than \(ByteSize(bytes: limit))",
                        hint: "send larger files as a tar with PUT …/archive")
                }
                return Array(buffer.readableBytesView)
            }
            try await fileErrors { try await sandbox.writeFile(path, mode: mode, from: chunks) }
            return JSONResponse.empty()
        }

        // One file's bytes out, streamed. The first chunk (or the sandbox's error) comes
        // before the answer's head, so that a missing or unreadable file is a 404 or 403, not
        // a broken stream.
        group.get("sandboxes/:id/files") { request, context -> Response in
            let path = try requireQuery(request, "path")
            let sandbox = try await sandbox(context)
            let chunks = AsyncThrowingChannel<[UInt8], any Error>()
            let reader = Task {
                do {
                    try await sandbox.readFile(path) { await chunks.send($0) }
                    chunks.finish()
                } catch {
                    chunks.fail(error)
                }
            }
            let first: [UInt8]?
            do {
                var iterator = chunks.makeAsyncIterator()
                first = try await iterator.next()
            } catch {
                reader.cancel()
                throw fileError(error)
            }
            var headers = HTTPFields()
            headers[.contentType] = "application/octet-stream"
            return Response(
                status: .ok, headers: headers,
                body: ResponseBody { writer in
                    defer { reader.cancel() }
                    if let first {
                        try await writer.write(ByteBuffer(bytes: first))
                        for try await chunk in chunks { try await writer.write(ByteBuffer(bytes: chunk)) }
                    }
                    try await writer.finish(nil)
                })
        }

        group.delete("sandboxes/:id/files") { request, context -> Response in
            let path = try requireQuery(request, "path")
            let recursive = flag(request, "recursive")
            let sandbox = try await sandbox(context)
            try await fileErrors { try await sandbox.removePath(path, recursive: recursive) }
            return JSONResponse.empty()
        }

        group.get("sandboxes/:id/directory") { request, context -> Response in
            let path = try requireQuery(request, "path")
            let sandbox = try await sandbox(context)
            let entries = try await fileErrors { try await sandbox.listDirectory(path) }
            return JSONResponse.make(entries.map(DirectoryEntry.init))
        }

        group.post("sandboxes/:id/directory") { request, context -> Response in
            let path = try requireQuery(request, "path")
            let mode = try fileMode(request, default: 0o755)
            let parents = flag(request, "parents")
            let sandbox = try await sandbox(context)
            try await fileErrors { try await sandbox.makeDirectory(path, mode: mode, parents: parents) }
            return JSONResponse.empty(status: 201)
        }

        group.post("sandboxes/:id/rename") { request, context -> Response in
            let body = try await decodeJSON(RenameRequest.self, from: request, context: context)
            let sandbox = try await sandbox(context)
            try await fileErrors { try await sandbox.rename(body.from, to: body.to) }
            return JSONResponse.empty()
        }
    }

    /// Runs a file operation, passing the sandbox's errors on with the status that fits.
    package func fileErrors<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw fileError(error)
        }
    }

    /// A full disk or tmpfs (ENOSPC, EDQUOT) is 507 Insufficient Storage rather than a quota's
    /// 429; the other errors keep their codes.
    package func fileError(_ error: any Error) -> any Error {
        guard var error = error as? CorralError, error.code == .resourceExhausted,
            error.message.contains("ENOSPC") || error.message.contains("EDQUOT")
        else { return error }
        error.code = .insufficientStorage
        error.hint = error.hint ?? "free space in the sandbox, or write somewhere with room"
        return error
    }
}

package func flag(_ request: Request, _ name: String) -> Bool {
    guard let value = request.uri.queryParameters[Substring(name)] else { return false }
    return value.isEmpty || value == "true" || value == "1"
}

package func fileMode(_ request: Request, default mode: UInt32 = 0o644) throws -> UInt32 {
    guard let text = request.uri.queryParameters["mode"] else { return mode }
    guard let value = UInt32(text, radix: 8), value <= 0o7777 else {
        throw CorralError.invalidArgument("mode must be octal permission bits such as 644 or 755, got '\(text)'")
    }
    return value
}
