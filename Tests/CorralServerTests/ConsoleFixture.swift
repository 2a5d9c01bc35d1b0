import CorralCore
import CorralSandbox
import CorralService
import CorralSession
import DockerEngine
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Synchronization
import Testing

@testable import CorralServer

/// A corrald for the console's route tests that needs no engine: its engine is a socket that
/// nothing answers (the pages that ask it say so), its sessions are real files, and two
/// tenants have tokens. Everything it logs is kept, to look for tokens in.
struct ConsoleFixture {
    let state: URL
    let server: CorralServer
    let store: FileSessionStore
    let engine: DockerEngineClient
    let tokenA: String
    let tokenB: String
    let logs: ConsoleLogCapture
    let logger: Logger

    static func with(_ body: (ConsoleFixture) async throws -> Void) async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-console-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: state) }
        let engine = try DockerEngineClient(parsing: "unix://\(state.path)/no-engine.sock")
        defer { engine.shutdown() }
        let logs = ConsoleLogCapture()
        var logger = Logger(label: "corral") { label in ConsoleLogHandler(capture: logs, label: label) }
        logger.logLevel = .trace
        let environment = SandboxEnvironment(
            initBinary: state.appendingPathComponent("corral-init").path,
            sandboxesDirectory: state.appendingPathComponent("sandboxes"))
        let runner = try await CorralServiceRunner.prepare(
            configuration: CorralConfiguration(), engine: engine, environment: environment)
        var configuration = CorralServer.Configuration()
        configuration.stateDirectory = state.path
        let tenants = TenantRegistry(stateDirectory: state)
        let tokenA = try await tenants.add(TenantID(unchecked: "tenant-a"))
        let tokenB = try await tenants.add(TenantID(unchecked: "tenant-b"))
        let store = FileSessionStore(directory: state.appendingPathComponent("sessions"))
        let server = CorralServer(
            configuration: configuration, runner: runner, tenants: tenants, sessions: store, logger: logger)
        try await body(
            ConsoleFixture(
                state: state, server: server, store: store, engine: engine, tokenA: tokenA, tokenB: tokenB,
                logs: logs, logger: logger))
    }

    /// Runs `body` against the listener's router (API and console), in process.
    func test(auth: CorralServer.AuthMode = .tokens, _ body: @Sendable (ConsoleBrowser) async throws -> Void)
        async throws
    {
        let app = Application(router: server.listenerRouter(auth: auth), logger: logger)
        try await app.test(.router) { client in try await body(ConsoleBrowser(client: client)) }
    }

    /// A session of `tenant` holding `events`.
    @discardableResult
    func session(of tenant: String, _ events: [NewEvent]) async throws -> SessionID {
        let info = try await store.create(tenant: TenantID(unchecked: tenant))
        if !events.isEmpty {
            _ = try await store.append(info.id, events, expectedSeq: 1, lease: try await store.currentLease(info.id))
        }
        return info.id
    }

    /// Every token of the fixture.
    var tokens: [String] { [tokenA, tokenB] }
}

/// What a browser keeps between requests: its cookies. Requests carry no Authorization
/// header: a browser logs in through the form.
final class ConsoleBrowser: Sendable {
    let client: any TestClientProtocol
    private let jar = Mutex<[String: String]>([:])

    init(client: any TestClientProtocol) {
        self.client = client
    }

    var cookies: [String: String] { jar.withLock { $0 } }

    func forgetCookies() { jar.withLock { $0 = [:] } }

    @discardableResult
    func get(_ path: String, headers extra: [(String, String)] = []) async throws -> TestResponse {
        try await send(.get, path, headers: extra)
    }

    @discardableResult
    func post(_ path: String, form: [(String, String)], headers extra: [(String, String)] = []) async throws
        -> TestResponse
    {
        let body = form.map { "\($0.0)=\(Self.encode($0.1))" }.joined(separator: "&")
        return try await send(
            .post, path, headers: [("Content-Type", "application/x-www-form-urlencoded")] + extra,
            body: ByteBuffer(string: body))
    }

    func send(_ method: HTTPRequest.Method, _ path: String, headers extra: [(String, String)], body: ByteBuffer? = nil)
        async throws -> TestResponse
    {
        var headers = HTTPFields()
        let cookie = jar.withLock { $0.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" } }
            .joined(separator: "; ")
        if !cookie.isEmpty { headers[.cookie] = cookie }
        for (name, value) in extra {
            if let field = HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
        }
        let response = try await client.execute(uri: path, method: method, headers: headers, body: body)
        for line in response.headers[values: .setCookie] {
            let pair = line.split(separator: ";", maxSplits: 1)[0]
            guard let equals = pair.firstIndex(of: "=") else { continue }
            let name = String(pair[..<equals])
            let value = String(pair[pair.index(after: equals)...])
            jar.withLock { $0[name] = value.isEmpty || line.contains("Max-Age=0") ? nil : value }
        }
        return response
    }

    /// Logs in through the form, as a browser does; returns the login's answer.
    @discardableResult
    func login(_ token: String, next: String? = nil) async throws -> TestResponse {
        let page = try await get("/console/login")
        let form = try #require(Self.hiddenValue("csrf", in: page.text))
        var fields = [("csrf", form), ("token", token)]
        if let next { fields.append(("next", next)) }
        return try await post("/console/login", form: fields)
    }

    /// The login's form token, from a page's logout form.
    func csrf(_ path: String = "/console/sessions") async throws -> String {
        try #require(Self.hiddenValue("csrf", in: try await get(path).text))
    }

    static func hiddenValue(_ name: String, in page: String) -> String? {
        guard let range = page.range(of: "name=\"\(name)\" value=\"") else { return nil }
        let rest = page[range.upperBound...]
        return rest.firstIndex(of: "\"").map { String(rest[..<$0]) }
    }

    static func encode(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }
}

extension TestResponse {
    var location: String? { headers[.location] }
}

final class ConsoleLogCapture: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    func append(_ line: String) { lines.withLock { $0.append(line) } }
}

struct ConsoleLogHandler: LogHandler {
    let capture: ConsoleLogCapture
    let label: String
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        let rendered = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        capture.append("\(event.level) \(label): \(event.message) \(rendered) \(event.source)")
    }
}

/// Events an agent could have written, meant to break a page: markup, a script, an event
/// handler, attribute breakouts, control characters, a direction override, a huge line.
enum HostileEvents {
    static let script = "<script>alert('pwned')</script>"
    static let breakout = "\"><img src=x onerror=alert(1)>"
    static let controls = "bell\u{07} esc\u{1B}[31mred\u{1B}[0m nul\u{00} del\u{7F} rlo\u{202E}evil\u{202C}"
    static let hugeLine = String(repeating: "x", count: 300_000)

    static var all: [NewEvent] {
        [
            NewEvent(
                id: EventID(unchecked: "session.created"), type: "session.created",
                data: ["agent": ["brain": ["provider": "anthropic", "model": .string(script)]]]),
            NewEvent(type: "user.message", data: ["text": .string(script + breakout)]),
            NewEvent(
                type: "brain.response",
                data: [
                    "turn": 1, "usage": ["input": 1200, "output": 80],
                    "content": [
                        ["type": "text", "text": .string(script + controls)],
                        [
                            "type": "tool_use", "id": .string(breakout), "name": .string(script),
                            "input": ["command": .string(script)],
                        ],
                    ],
                ]),
            NewEvent(
                type: "tool.intent",
                data: [
                    "toolUseID": .string(breakout), "name": "bash", "input": ["command": .string(script)],
                    "sandbox": "main",
                ]),
            NewEvent(
                type: "tool.result",
                data: [
                    "toolUseID": .string(breakout), "name": "bash", "status": "unknown", "ms": 12.5,
                    "text": .string(script + controls + hugeLine),
                ]),
            NewEvent(type: script, data: .object([breakout: .string(script)])),
            NewEvent(type: "session.ended", data: ["reason": .string(breakout), "text": .string(controls)]),
        ]
    }
}
