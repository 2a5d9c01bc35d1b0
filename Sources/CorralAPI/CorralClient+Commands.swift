import CorralCore
import CorralSandbox
import CurlHTTP
import DockerEngine
import Foundation

/// Commands that run on (stdin, terminals, detach, attach, ps, kill) and files anywhere the
/// sandbox user may write: the client side of `/v1/sandboxes/{id}/commands…`, `/files`,
/// `/directory` and `/rename`.
extension CorralClient {
    /// Starts a detached command and returns its handle at once; it runs on.
    public func startDetached(_ id: SandboxID, _ request: StartCommandRequest) async throws -> CommandHandle {
        var request = request
        request.detached = true
        return try await call(.post, "/v1/sandboxes/\(id)/commands", body: request)
    }

    /// Starts a command that lives as long as this call: `started` gets its handle first (for
    /// stdin and resizes on other calls), `output` its output as it comes. Returns how it
    /// ended. Cancelling the call stops the command.
    public func runCommand(
        _ id: SandboxID, _ request: StartCommandRequest, started: (CommandHandle) async throws -> Void = { _ in },
        output: (CommandOutputChunk) async throws -> Void
    ) async throws -> CommandStatus {
        var request = request
        request.detached = nil
        let body = try JSONEncoder().encode(request)
        return try await commandStream(
            self.request(
                .post, "/v1/sandboxes/\(id)/commands", body: .bytes(Array(body)), contentType: "application/json",
                timeout: nil),
            started: started, output: output)
    }

    /// Follows a running command from `offset` (what its buffer still holds is replayed);
    /// `attached` learns where the stream starts and how much before it was dropped. Returns
    /// how it ended. Leaving stops only the stream.
    public func attachCommand(
        _ id: SandboxID, _ command: CommandID, from offset: Int64 = 0,
        attached: (CommandHandle) async throws -> Void = { _ in },
        output: (CommandOutputChunk) async throws -> Void
    ) async throws -> CommandStatus {
        let path = "/v1/sandboxes/\(id)/commands/\(command)/output" + Self.query(["offset": String(offset)])
        return try await commandStream(request(.get, path, timeout: nil), started: attached, output: output)
    }

    /// Streams `input` to the command's stdin; its end closes stdin (EOF) unless `close` is
    /// false. Returns how many bytes went in.
    @discardableResult
    public func writeStdin(
        _ id: SandboxID, _ command: CommandID, _ input: AsyncThrowingStream<[UInt8], any Error>, close: Bool = true
    ) async throws -> StdinWritten {
        let path = "/v1/sandboxes/\(id)/commands/\(command)/stdin" + (close ? "" : "?close=false")
        let request = request(.post, path, body: .stream(input), contentType: "application/octet-stream", timeout: nil)
        return try await decode(send(request))
    }

    public func resizeCommand(_ id: SandboxID, _ command: CommandID, to size: TerminalSize) async throws {
        let _: Empty = try await call(.post, "/v1/sandboxes/\(id)/commands/\(command)/resize", body: size)
    }

    public func signalCommand(_ id: SandboxID, _ command: CommandID, _ signal: String) async throws {
        let _: Empty = try await call(
            .post, "/v1/sandboxes/\(id)/commands/\(command)/signal", body: SignalRequest(signal: signal))
    }

    public func commands(_ id: SandboxID) async throws -> [CommandInfo] {
        try await call(.get, "/v1/sandboxes/\(id)/commands")
    }

    // MARK: Files

    /// Streams the file at `path` to `chunk`; returns its size.
    @discardableResult
    public func readFile(_ id: SandboxID, path: String, chunk: ([UInt8]) async throws -> Void) async throws -> Int64 {
        let request = request(.get, "/v1/sandboxes/\(id)/files" + Self.query(["path": path]), timeout: nil)
        return try await http.withStreamingResponse(request) { head, stream in
            guard head.status == 200 else {
                throw Self.error(status: head.status, body: try await stream.collect(upTo: 1 << 20))
            }
            var total: Int64 = 0
            for try await piece in stream {
                total += Int64(piece.count)
                try await chunk(piece)
            }
            return total
        }
    }

    /// Writes `path` from `contents`, streamed, replacing any file there.
    public func writeFile(
        _ id: SandboxID, path: String, mode: UInt32 = 0o644, contents: AsyncThrowingStream<[UInt8], any Error>
    ) async throws {
        let path =
            "/v1/sandboxes/\(id)/files" + Self.query(["path": path, "mode": String(mode & 0o7777, radix: 8)])
        let _: Empty = try await decode(
            send(request(.put, path, body: .stream(contents), contentType: "application/octet-stream", timeout: nil)))
    }

    public func listDirectory(_ id: SandboxID, path: String) async throws -> [DirectoryEntry] {
        try await call(.get, "/v1/sandboxes/\(id)/directory" + Self.query(["path": path]))
    }

    public func makeDirectory(_ id: SandboxID, path: String, parents: Bool = false) async throws {
        let query = Self.query(parents ? ["path": path, "parents": "true"] : ["path": path])
        let _: Empty = try await call(.post, "/v1/sandboxes/\(id)/directory" + query)
    }

    public func removePath(_ id: SandboxID, path: String, recursive: Bool = false) async throws {
        let query = Self.query(recursive ? ["path": path, "recursive": "true"] : ["path": path])
        let _: Empty = try await call(.delete, "/v1/sandboxes/\(id)/files" + query)
    }

    public func rename(_ id: SandboxID, from: String, to: String) async throws {
        let _: Empty = try await call(.post, "/v1/sandboxes/\(id)/rename", body: RenameRequest(from: from, to: to))
    }

    // MARK: Plumbing

    /// Reads a command's NDJSON stream: the handle, output, then the status or an error.
    func commandStream(
        _ request: HTTPRequest, started: (CommandHandle) async throws -> Void,
        output: (CommandOutputChunk) async throws -> Void
    ) async throws -> CommandStatus {
        try await http.withStreamingResponse(request) { head, stream in
            guard head.status == 200 else {
                throw Self.error(status: head.status, body: try await stream.collect(upTo: 1 << 20))
            }
            let decoder = Self.decoder()
            var buffer: [UInt8] = []
            for try await chunk in stream {
                buffer.append(contentsOf: chunk)
                var start = buffer.startIndex
                while let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
                    let line = buffer[start..<newline]
                    start = newline + 1
                    guard !line.isEmpty else { continue }
                    let event = try decoder.decode(CommandStreamEvent.self, from: Data(line))
                    if let error = event.error { throw error.corralError }
                    if let status = event.status { return status }
                    if let handle = event.command { try await started(handle) }
                    if let chunk = event.chunk { try await output(chunk) }
                }
                buffer.removeSubrange(..<start)
            }
            throw CorralError(
                .unavailable, "the service ended the command's stream before it finished",
                hint: "attach again with `corral attach` if the command was detached")
        }
    }
}
