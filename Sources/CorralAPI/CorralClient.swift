import CorralCore
import CorralSandbox
import CurlHTTP
import DockerEngine
import Foundation

/// corral's HTTP API from the client side: what the command line uses when a service answers
/// (`$CORRAL_STATE_DIR/corral.sock`, or `--server URL` with `CORRAL_TOKEN`).
public final class CorralClient: Sendable {
    public let endpoint: HTTPEndpoint
    public let http: CurlHTTPClient
    let token: String?

    public init(endpoint: HTTPEndpoint, token: String? = nil) throws {
        self.endpoint = endpoint
        self.token = token
        var configuration = CurlHTTPClient.Configuration()
        configuration.connectTimeout = .seconds(5)
        // A command line's calls to the local service skip loading libcurl (about 6 ms).
        configuration.directUnixSocket = true
        self.http = try CurlHTTPClient(endpoint: endpoint, configuration: configuration)
    }

    public func shutdown() { http.shutdown() }

    // MARK: Sandboxes

    public func createSandbox(_ body: CreateSandboxRequest) async throws -> CreatedSandbox {
        try await call(.post, "/v1/sandboxes", body: body)
    }

    public func listSandboxes() async throws -> [SandboxInfo] {
        try await call(.get, "/v1/sandboxes")
    }

    public func sandbox(_ id: SandboxID) async throws -> SandboxInfo {
        try await call(.get, "/v1/sandboxes/\(id)")
    }

    public func removeSandbox(_ id: SandboxID) async throws {
        let _: Empty = try await call(.delete, "/v1/sandboxes/\(id)")
    }

    public func execute(_ id: SandboxID, tool: String, input: JSONValue) async throws -> ToolOutput {
        try await call(.post, "/v1/sandboxes/\(id)/execute", body: ExecuteRequest(name: tool, input: input))
    }

    /// Runs a command, handing output to `output` as the service streams it.
    public func exec(
        _ id: SandboxID, _ command: SandboxCommand, output: (StdioStream, [UInt8]) async throws -> Void
    ) async throws -> CommandStatus {
        let body = ExecStreamWire.encode(ExecRequest(command))
        let request = request(.post, "/v1/sandboxes/\(id)/exec", body: .bytes(body))
        return try await http.withStreamingResponse(request) { head, stream in
            guard head.status == 200 else {
                throw Self.error(status: head.status, body: try await stream.collect(upTo: 1 << 20))
            }
            var buffer: [UInt8] = []
            for try await chunk in stream {
                buffer.append(contentsOf: chunk)
                while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = Array(buffer[..<newline])
                    buffer.removeSubrange(...newline)
                    guard !line.isEmpty else { continue }
                    let event = try ExecStreamWire.decode(line)
                    if let error = event.error { throw error.corralError }
                    if let status = event.status { return status }
                    try await output(event.stdioStream, event.bytes)
                }
            }
            throw CorralError(.unavailable, "the service ended the command's stream before it finished")
        }
    }

    /// Sends a tar stream into `directory` in the sandbox.
    public func putArchive(_ id: SandboxID, directory: String, tar: AsyncThrowingStream<[UInt8], any Error>)
        async throws
    {
        let path = "/v1/sandboxes/\(id)/archive" + Self.query(["path": directory])
        let response = try await send(
            request(.put, path, body: .stream(tar), contentType: "application/x-tar", timeout: nil))
        guard (200..<300).contains(response.status) else {
            throw Self.error(status: response.status, body: response.body)
        }
    }

    /// Streams `path` out of the sandbox as a tar, chunk by chunk.
    public func getArchive(_ id: SandboxID, path: String, chunk: ([UInt8]) async throws -> Void) async throws {
        let request = request(.get, "/v1/sandboxes/\(id)/archive" + Self.query(["path": path]), timeout: nil)
        try await http.withStreamingResponse(request) { head, stream in
            guard head.status == 200 else {
                throw Self.error(status: head.status, body: try await stream.collect(upTo: 1 << 20))
            }
            for try await piece in stream { try await chunk(piece) }
        }
    }

    /// What is at `path` in the sandbox; nil when nothing is.
    public func stat(_ id: SandboxID, path: String) async throws -> PathStat? {
        let response = try await send(request(.get, "/v1/sandboxes/\(id)/stat" + Self.query(["path": path])))
        if response.status == 404,
            let body = try? JSONDecoder().decode(APIErrorBody.self, from: Data(response.body)),
            body.code == "no_such_path"
        {
            return nil
        }
        return try decode(response)
    }

    public func pools() async throws -> [PoolStatus] {
        try await call(.get, "/v1/pools")
    }

    // MARK: Plumbing

    struct Empty: Codable {}

    public func request(
        _ method: HTTPMethod, _ path: String, body: HTTPRequestBody = .empty, contentType: String? = nil,
        timeout: Duration? = .seconds(600)
    ) -> HTTPRequest {
        var headers = HTTPHeaders()
        if let token { headers.add("Authorization", "Bearer \(token)") }
        if let contentType { headers.add("Content-Type", contentType) }
        return HTTPRequest(method, path, headers: headers, body: body, timeout: timeout)
    }

    public func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        do {
            return try await http.execute(request)
        } catch let error as CorralError where error.code == .unavailable {
            var error = error
            error.hint = error.hint ?? "start the service with `corral serve`, or check --server / CORRAL_SERVER"
            throw error
        }
    }

    func call<Response: Decodable>(_ method: HTTPMethod, _ path: String) async throws -> Response {
        try await decode(send(request(method, path)))
    }

    func call<Response: Decodable>(_ method: HTTPMethod, _ path: String, body: some Encodable) async throws -> Response
    {
        let data = try JSONEncoder().encode(body)
        return try await decode(send(request(method, path, body: .bytes(Array(data)), contentType: "application/json")))
    }

    func decode<Response: Decodable>(_ response: HTTPResponse) throws -> Response {
        guard (200..<300).contains(response.status) else {
            throw Self.error(status: response.status, body: response.body)
        }
        if Response.self == Empty.self, let empty = Empty() as? Response { return empty }
        do {
            return try Self.decoder().decode(Response.self, from: Data(response.body))
        } catch {
            throw CorralError(.internalError, "could not read the service's answer: \(error)")
        }
    }

    /// A decoder for the service's answers. Dates are ISO 8601, with or without fractional
    /// seconds (event times carry microseconds).
    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            if let date = try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text) { return date }
            if let date = try? Date.ISO8601FormatStyle().parse(text) { return date }
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "'\(text)' is not an ISO 8601 time")
        }
        return decoder
    }

    static func error(status: Int, body: [UInt8]) -> CorralError {
        if var decoded = try? JSONDecoder().decode(APIErrorBody.self, from: Data(body)) {
            if decoded.code == CorralError.Code.unauthenticated.rawValue {
                // The service's hint speaks HTTP; the command line's user sets a variable.
                decoded.hint =
                    "set CORRAL_TOKEN to a token that `corral tenant add NAME` printed on the service's machine"
            }
            return decoded.corralError
        }
        return CorralError(
            .internalError, "the service answered HTTP \(status): \(String(decoding: body.prefix(200), as: UTF8.self))")
    }

    static func query(_ items: [String: String]) -> String {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+/?")
        let parts = items.sorted { $0.key < $1.key }.map {
            "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: allowed) ?? $0.value)"
        }
        return parts.isEmpty ? "" : "?" + parts.joined(separator: "&")
    }
}
