import CorralCore
import CurlHTTP
import Foundation
import Logging
import Synchronization

/// A typed client for the Docker Engine API (and Podman's compatible API) over libcurl.
///
/// The API version is negotiated once per client: unversioned `GET /_ping` and `GET /version`
/// give the engine's range, and every later path is prefixed with the chosen version, so one
/// client works against Docker 20.10 (API 1.41) and current Docker (which refuses below 1.44).
public final class DockerEngineClient: Sendable {
    public let endpoint: HTTPEndpoint
    let http: CurlHTTPClient
    let logger: Logger
    private let version = Mutex<APIVersion?>(nil)
    /// Limit for plain calls; streams (exec output, events, archives) have none.
    let callTimeout: Duration

    public init(endpoint: HTTPEndpoint, callTimeout: Duration = .seconds(120), logger: Logger? = nil) throws {
        self.endpoint = endpoint
        self.callTimeout = callTimeout
        self.logger = logger ?? Logger(label: "corral.engine")
        self.http = try CurlHTTPClient(endpoint: endpoint, logger: self.logger)
    }

    /// `unix:///var/run/docker.sock`, `tcp://host:2376` (with `tls` for `--tlsverify` engines).
    public convenience init(parsing text: String, tls: TLSConfiguration? = nil, logger: Logger? = nil) throws {
        try self.init(endpoint: HTTPEndpoint(parsing: text, tls: tls), logger: logger)
    }

    public func shutdown() { http.shutdown() }

    // MARK: Version negotiation

    /// The negotiated API version; negotiates on first use.
    public func apiVersion() async throws -> APIVersion {
        if let known = version.withLock({ $0 }) { return known }
        let ping = try await send(HTTPRequest(.get, "/_ping", timeout: callTimeout))
        let advertised = ping.head.headers["Api-Version"].flatMap(APIVersion.init)
        let info = try await send(HTTPRequest(.get, "/version", timeout: callTimeout))
        guard info.status == 200 else { throw engineError(info, method: "GET", path: "/version") }
        let engineVersion = try decode(EngineVersion.self, from: info, path: "/version")
        guard let maximum = APIVersion(engineVersion.apiVersion) ?? advertised else {
            throw CorralError(.engine, "the engine at \(endpoint) did not say which API version it speaks")
        }
        let chosen = try APIVersion.negotiate(
            engineMinimum: engineVersion.minAPIVersion.flatMap(APIVersion.init), engineMaximum: maximum,
            endpoint: endpoint.description)
        version.withLock { $0 = chosen }
        logger.debug("negotiated engine API", metadata: ["version": "\(chosen)", "engine": "\(engineVersion.version)"])
        return chosen
    }

    /// `GET /_ping`, unversioned: true when the engine answers OK.
    public func ping() async throws -> Bool {
        let response = try await send(HTTPRequest(.get, "/_ping", timeout: callTimeout))
        return response.status == 200
    }

    public func version() async throws -> EngineVersion {
        try await get(EngineVersion.self, "/version")
    }

    public func info() async throws -> EngineInfo {
        try await get(EngineInfo.self, "/info")
    }

    // MARK: Plumbing shared by the endpoint extensions

    /// Sends a request as is (no version prefix), turning transport failures into errors
    /// that say where the engine was expected and how to start one.
    func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        do {
            return try await http.execute(request)
        } catch let error as CorralError where error.code == .unavailable {
            throw unreachable(error)
        }
    }

    func unreachable(_ error: CorralError) -> CorralError {
        var error = error
        if error.hint == nil {
            error.hint =
                endpoint.isLocal
                ? "start the engine (make engine, or systemctl start docker), or point --engine / CORRAL_ENGINE at one that runs"
                : "check that the engine runs and that --engine / CORRAL_ENGINE and the TLS files are right"
        }
        return error
    }

    /// The versioned path with an encoded query.
    func path(_ path: String, query: [(String, String?)] = []) async throws -> String {
        let version = try await apiVersion()
        return "/v\(version)\(path)" + Self.encodeQuery(query)
    }

    /// A versioned call whose reply is checked: non-2xx statuses throw `DockerEngineError`.
    @discardableResult
    func call(
        _ method: HTTPMethod, _ path: String, query: [(String, String?)] = [], body: HTTPRequestBody = .empty,
        contentType: String? = nil, accept: Set<Int> = []
    ) async throws -> HTTPResponse {
        let fullPath = try await self.path(path, query: query)
        var headers = HTTPHeaders()
        if let contentType { headers.add("Content-Type", contentType) }
        let response = try await send(HTTPRequest(method, fullPath, headers: headers, body: body, timeout: callTimeout))
        guard (200..<300).contains(response.status) || accept.contains(response.status) else {
            throw engineError(response, method: method.rawValue, path: path)
        }
        return response
    }

    func call(_ method: HTTPMethod, _ path: String, query: [(String, String?)] = [], json: some Encodable)
        async throws -> HTTPResponse
    {
        let body = try JSONEncoder().encode(json)
        return try await call(method, path, query: query, body: .bytes(Array(body)), contentType: "application/json")
    }

    func get<T: Decodable>(_ type: T.Type, _ path: String, query: [(String, String?)] = []) async throws -> T {
        let response = try await call(.get, path, query: query)
        return try decode(type, from: response, path: path)
    }

    func decode<T: Decodable>(_ type: T.Type, from response: HTTPResponse, path: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(response.body))
        } catch {
            throw CorralError(
                .engine, "could not read the engine's answer to \(path): \(error)",
                hint: "the engine may speak an API this corral does not know; run corral doctor")
        }
    }

    func engineError(_ response: HTTPResponse, method: String, path: String) -> DockerEngineError {
        let text = response.bodyText
        var message = text.trimmingCharacters(in: .whitespacesAndNewlines)
        struct Message: Decodable { var message: String }
        if let decoded = try? JSONDecoder().decode(Message.self, from: Data(response.body)) {
            message = decoded.message
        }
        if message.isEmpty { message = "no message" }
        return DockerEngineError(status: response.status, message: message, method: method, path: path)
    }

    static func encodeQuery(_ query: [(String, String?)]) -> String {
        let pairs = query.compactMap { name, value in value.map { "\(percentEncode(name))=\(percentEncode($0))" } }
        return pairs.isEmpty ? "" : "?" + pairs.joined(separator: "&")
    }

    static func percentEncode(_ text: String) -> String {
        var output = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                output.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                output += String(format: "%%%02X", byte)
            }
        }
        return output
    }

    /// Encodes a path segment taken from user input (a container name or id): everything but
    /// unreserved characters, so `..` or `/` cannot change which endpoint is called.
    static func segment(_ text: String) -> String { percentEncode(text) }

    /// Docker's `filters` query parameter: JSON of name to list of values.
    static func filters(_ filters: [String: [String]]) -> String? {
        guard !filters.isEmpty, let data = try? JSONEncoder().encode(filters) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}
