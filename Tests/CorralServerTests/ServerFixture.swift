import CorralAPI
import CorralCore
import CorralSandbox
import CorralServer
import CorralService
import CorralSession
import DockerEngine
import Foundation
import Hummingbird
import HummingbirdTesting
import TestSupport
import Testing

/// A server on the test engine with its own state directory, and two tenants with tokens.
struct ServerFixture {
    let state: URL
    let server: CorralServer
    let engine: DockerEngineClient
    let tokenA: String
    let tokenB: String

    /// `sharing`: another fixture whose tenants this one shares (a second replica over the same
    /// PostgreSQL store), so that its tokens are taken here too and none are added.
    init(
        sandboxesPerTenant: Int = 20, templates: [SandboxTemplate] = [], sessions: (any SessionStore)? = nil,
        poolEveryTemplate: Bool = false, sharing: ServerFixture? = nil, sessionsPerTenant: Int = 1000
    ) async throws {
        state = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-server-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        engine = try DockerEngineClient(parsing: TestEnvironment.engineEndpoint)
        let environment = SandboxEnvironment(
            initBinary: try SandboxEnvironment.locateInit(),
            sandboxesDirectory: state.appendingPathComponent("sandboxes"))
        var serviceConfiguration = CorralConfiguration()
        serviceConfiguration.templates = templates
        let runner = try await CorralServiceRunner.prepare(
            configuration: serviceConfiguration, engine: engine, environment: environment,
            poolEveryTemplate: poolEveryTemplate)
        var configuration = CorralServer.Configuration()
        configuration.sandboxesPerTenant = sandboxesPerTenant
        configuration.sessionsPerTenant = sessionsPerTenant
        configuration.stateDirectory = state.path
        // Tenants beside the sessions, as `corral serve` keeps them.
        let sessions = sessions ?? FileSessionStore(directory: state.appendingPathComponent("sessions"))
        let tenants = TenantRegistry(store: sessions, stateDirectory: state)
        if let sharing {
            (tokenA, tokenB) = (sharing.tokenA, sharing.tokenB)
        } else {
            tokenA = try await tenants.add(TenantID(unchecked: "tenant-a"))
            tokenB = try await tenants.add(TenantID(unchecked: "tenant-b"))
        }
        server = CorralServer(configuration: configuration, runner: runner, tenants: tenants, sessions: sessions)
    }

    /// A fixture for `body`, cleaned up before this returns however `body` ends. (A cleanup in
    /// a `defer { Task { ... } }` may never run: the test process can exit first, leaving the
    /// test's sandboxes on the engine.)
    static func with(
        sandboxesPerTenant: Int = 20, templates: [SandboxTemplate] = [], sessions: (any SessionStore)? = nil,
        poolEveryTemplate: Bool = false, _ body: (ServerFixture) async throws -> Void
    ) async throws {
        let fixture = try await ServerFixture(
            sandboxesPerTenant: sandboxesPerTenant, templates: templates, sessions: sessions,
            poolEveryTemplate: poolEveryTemplate)
        do {
            try await body(fixture)
        } catch {
            await fixture.cleanUp()
            throw error
        }
        await fixture.cleanUp()
    }

    /// Runs `body` against the token-checking router, in process.
    @discardableResult
    func test<Value>(_ body: @Sendable (any TestClientProtocol) async throws -> Value) async throws -> Value {
        let app = Application(router: server.router(auth: .tokens))
        return try await app.test(.router, body)
    }

    /// Removes every sandbox the test made (their workspaces are mounted) and the state
    /// directory.
    func cleanUp() async {
        _ = try? await Provisioner.removeEverything(
            engine: engine, sandboxesDirectory: state.appendingPathComponent("sandboxes"))
        try? FileManager.default.removeItem(at: state)
        engine.shutdown()
    }
}

extension TestClientProtocol {
    /// A request as `token`'s tenant, with a JSON body when given.
    func call(
        _ method: HTTPRequest.Method, _ uri: String, token: String?, json: String? = nil, body: [UInt8]? = nil
    ) async throws -> TestResponse {
        var headers = HTTPFields()
        if let token { headers[.authorization] = "Bearer \(token)" }
        var buffer: ByteBuffer?
        if let json {
            headers[.contentType] = "application/json"
            buffer = ByteBuffer(string: json)
        } else if let body {
            buffer = ByteBuffer(bytes: body)
        }
        return try await execute(uri: uri, method: method, headers: headers, body: buffer)
    }
}

extension TestResponse {
    var text: String { String(buffer: body) }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(type, from: Data(buffer: body))
    }

    /// The `{code, message}` body every error has.
    var error: APIErrorBody? { try? decode(APIErrorBody.self) }
}
