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
import Synchronization
import TestSupport
import Testing

@Suite("docs/openapi.yaml matches the routes corrald serves")
struct OpenAPITests {
    @Test("every route the router serves is documented, and every documented operation is served")
    func routesMatch() async throws {
        let document = try OpenAPIDocument()
        let documented = Set(document.operations.map { "\($0.method) \($0.path)" })
        try await withOfflineServer { server in
            for auth in [CorralServer.AuthMode.tokens, .local] {
                let served = Set(
                    server.router(auth: auth).routes.map {
                        "\($0.method.rawValue) \(Self.openAPIPath($0.path.description))"
                    })
                let undocumented = served.subtracting(documented).sorted()
                let unserved = documented.subtracting(served).sorted()
                #expect(undocumented.isEmpty, "served but not in docs/openapi.yaml: \(undocumented)")
                #expect(unserved.isEmpty, "in docs/openapi.yaml but not served: \(unserved)")
            }
        }
        let ids = document.operations.map(\.id)
        #expect(!ids.contains(""), "every operation needs an operationId")
        #expect(Set(ids).count == ids.count, "operationIds must be unique: \(ids.sorted())")
    }

    @Test("every /v1 operation but health answers 401 without a token, as documented; health and metrics need none")
    func authentication() async throws {
        let document = try OpenAPIDocument()
        try await withOfflineServer { server in
            try await Application(router: server.router(auth: .tokens)).test(.router) { client in
                for operation in document.operations {
                    let uri = Self.example(operation.path) + "?path=/"
                    for token in [nil, "corral_not-a-real-token"] {
                        let response = try await client.call(
                            HTTPRequest.Method(operation.method) ?? .get, uri, token: token)
                        if operation.authenticated {
                            #expect(response.status == .unauthorized, "\(operation) with token \(token ?? "none")")
                            try Self.expectDocumented(document, operation.id, response)
                        } else {
                            #expect(response.status == .ok, "\(operation) should need no token")
                            try Self.expectDocumented(document, operation.id, response)
                        }
                    }
                }
            }
        }
    }

    @Test("each operation's main cases answer with a documented status and a body the document describes", .engine)
    func walk() async throws {
        let document = try OpenAPIDocument()
        let fixture = try await ServerFixture()
        do {
            // Brains point at a closed loopback port: agent runs start for real, fail fast, and
            // never leave the machine.
            let server = CorralServer(
                configuration: fixture.server.configuration, runner: fixture.server.runner,
                tenants: fixture.server.tenants,
                sessions: fixture.server.sessions,
                brainEnvironment: [
                    "ANTHROPIC_API_KEY": "test-not-a-key", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
                    "OPENAI_API_KEY": "test-not-a-key", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                ])
            let exercised = ExercisedOperations()
            try await Application(router: server.router(auth: .tokens)).test(.router) { client in
                let walker = Walker(document: document, client: client, token: fixture.tokenA, exercised: exercised)
                try await walker.sandboxes()
                try await walker.sessions()
                try await walker.agents()
                try await walker.service()
                try await walker.tenantsRefused()
            }
            try await Application(router: server.router(auth: .local)).test(.router) { client in
                let walker = Walker(document: document, client: client, token: "", exercised: exercised)
                try await walker.operatorOnly()
            }
            let missing = Set(document.operations.map(\.id)).subtracting(exercised.ids).sorted()
            #expect(missing.isEmpty, "operations the walk does not exercise: \(missing); add them to Walker")
        } catch {
            await fixture.cleanUp()
            throw error
        }
        await fixture.cleanUp()
    }

    // MARK: Helpers

    /// Hummingbird's `/v1/sandboxes/:id` as OpenAPI spells it: `/v1/sandboxes/{id}`.
    static func openAPIPath(_ path: String) -> String {
        "/"
            + path.split(separator: "/").map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0) }.joined(
                separator: "/")
    }

    /// A documented path with its parameters filled in by well-formed ids.
    static func example(_ path: String) -> String {
        path.replacingOccurrences(of: "{id}", with: path.hasPrefix("/v1/sessions") ? "se-missing" : "sb-missing")
    }

    /// The response's status is one the operation lists, and its body is what the document says
    /// for that status: the media type, and for JSON the schema, undocumented fields included.
    static func expectDocumented(
        _ document: OpenAPIDocument, _ id: String, _ response: TestResponse,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let code = Int(response.status.code)
        let operation = try document.operation(id)
        guard let documented = try document.response(id, status: code) else {
            Issue.record(
                "\(operation) answered \(code), which the document does not list: \(response.text)",
                sourceLocation: sourceLocation)
            return
        }
        guard let content = documented["content"]?.objectValue else {
            #expect(
                response.body.readableBytes == 0, "\(operation) \(code) has no documented body but sent one",
                sourceLocation: sourceLocation)
            return
        }
        let mediaType = response.headers[.contentType]?.split(separator: ";").first.map(String.init) ?? ""
        guard let media = content[mediaType] else {
            Issue.record(
                "\(operation) \(code) sent \(mediaType); documented: \(content.keys.sorted())",
                sourceLocation: sourceLocation)
            return
        }
        guard let schema = media["schema"] else { return }
        let bodies: [Data]
        switch mediaType {
        case "application/json": bodies = [Data(buffer: response.body)]
        case "application/x-ndjson": bodies = response.text.split(separator: "\n").map { Data($0.utf8) }
        default: return
        }
        for body in bodies {
            let value = try JSONDecoder().decode(JSONValue.self, from: body)
            let problems = try document.problems(value, against: schema)
            #expect(problems.isEmpty, "\(operation) \(code): \(problems)", sourceLocation: sourceLocation)
        }
    }

    /// A server whose engine never answers: enough for routes and authentication.
    func withOfflineServer(_ body: (CorralServer) async throws -> Void) async throws {
        try await withTemporaryDirectory { state in
            let engine = try DockerEngineClient(parsing: "unix://\(state.path)/no-engine.sock")
            defer { engine.shutdown() }
            let environment = SandboxEnvironment(
                initBinary: state.appendingPathComponent("corral-init").path,
                sandboxesDirectory: state.appendingPathComponent("sandboxes"))
            let runner = try await CorralServiceRunner.prepare(
                configuration: CorralConfiguration(), engine: engine, environment: environment)
            let server = CorralServer(
                configuration: CorralServer.Configuration(), runner: runner,
                tenants: TenantRegistry(stateDirectory: state),
                sessions: FileSessionStore(directory: state.appendingPathComponent("sessions")))
            try await body(server)
        }
    }
}

/// The operationIds a walk has called.
final class ExercisedOperations: Sendable {
    private let state = Mutex<Set<String>>([])
    func insert(_ id: String) { state.withLock { _ = $0.insert(id) } }
    var ids: Set<String> { state.withLock { $0 } }
}

/// Calls every documented operation's main cases, checking each answer against the document.
struct Walker {
    let document: OpenAPIDocument
    let client: any TestClientProtocol
    let token: String
    let exercised: ExercisedOperations

    /// One call as `operation`, expecting `status`; returns the response for more checks.
    @discardableResult
    func call(
        _ operation: String, _ method: HTTPRequest.Method, _ uri: String, json: String? = nil, body: [UInt8]? = nil,
        expect status: HTTPResponse.Status, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> TestResponse {
        let response = try await client.call(method, uri, token: token, json: json, body: body)
        #expect(
            response.status == status, "\(method) \(uri): \(response.text.prefix(300))", sourceLocation: sourceLocation)
        try OpenAPITests.expectDocumented(document, operation, response, sourceLocation: sourceLocation)
        exercised.insert(operation)
        return response
    }

    func sandboxes() async throws {
        let created = try await call(
            "createSandbox", .post, "/v1/sandboxes", json: #"{"ttl": "10m", "labels": {"suite": "openapi"}}"#,
            expect: .created)
        let id = try created.decode(CreatedSandbox.self).id
        try await call(
            "createSandbox", .post, "/v1/sandboxes", json: #"{"template": "no-such-template"}"#, expect: .notFound)
        try await call("createSandbox", .post, "/v1/sandboxes", json: "{bad", expect: .badRequest)
        // Found by fuzzing: a duration past Int64 milliseconds crashed the service.
        try await call("createSandbox", .post, "/v1/sandboxes", json: #"{"ttl": 1e300}"#, expect: .badRequest)
        try await call("createSandbox", .post, "/v1/sandboxes", json: #"{"idleTTL": "1e300"}"#, expect: .badRequest)
        let big = #"{"labels": {"x": ""# + String(repeating: "a", count: 1 << 20) + #""}}"#
        try await call("createSandbox", .post, "/v1/sandboxes", json: big, expect: .contentTooLarge)

        try await call("listSandboxes", .get, "/v1/sandboxes", expect: .ok)
        try await call("getSandbox", .get, "/v1/sandboxes/\(id)", expect: .ok)
        try await call("getSandbox", .get, "/v1/sandboxes/sb-missing", expect: .notFound)
        try await call("getSandbox", .get, "/v1/sandboxes/NOT_AN_ID", expect: .badRequest)

        let ran = try await call(
            "executeTool", .post, "/v1/sandboxes/\(id)/execute",
            json: #"{"name": "bash", "input": {"command": "true"}}"#, expect: .ok)
        #expect(try ran.decode(ToolOutput.self).isError == false)
        let failed = try await call(
            "executeTool", .post, "/v1/sandboxes/\(id)/execute",
            json: #"{"name": "bash", "input": {"command": "exit 3"}}"#,
            expect: .ok)
        #expect(try failed.decode(ToolOutput.self).status?.exitCode == 3)
        try await call(
            "executeTool", .post, "/v1/sandboxes/\(id)/execute", json: #"{"input": {}}"#, expect: .badRequest)
        try await call(
            "executeTool", .post, "/v1/sandboxes/sb-missing/execute",
            json: #"{"name": "bash", "input": {"command": "true"}}"#,
            expect: .notFound)

        let streamed = try await call(
            "execStream", .post, "/v1/sandboxes/\(id)/exec",
            json: #"{"command": ["bash", "-c", "echo out; echo err >&2; exit 2"]}"#,
            expect: .ok)
        #expect(streamed.text.contains(#""exitCode":2"#))
        try await call("execStream", .post, "/v1/sandboxes/\(id)/exec", json: #"{"command": []}"#, expect: .badRequest)

        try await call(
            "putFile", .put, "/v1/sandboxes/\(id)/files?path=/workspace/a.txt", body: Array("hello".utf8),
            expect: .noContent)
        try await call(
            "putFile", .put, "/v1/sandboxes/\(id)/files?path=/workspace/big",
            body: [UInt8](repeating: 1, count: (8 << 20) + 1),
            expect: .contentTooLarge)
        let read = try await call("getFile", .get, "/v1/sandboxes/\(id)/files?path=/workspace/a.txt", expect: .ok)
        #expect(read.text == "hello")
        try await call("getFile", .get, "/v1/sandboxes/\(id)/files?path=/workspace", expect: .badRequest)
        try await call("statPath", .get, "/v1/sandboxes/\(id)/stat?path=/workspace/a.txt", expect: .ok)
        let absent = try await call(
            "statPath", .get, "/v1/sandboxes/\(id)/stat?path=/workspace/none", expect: .notFound)
        #expect(absent.error?.code == "no_such_path")
        try await call("statPath", .get, "/v1/sandboxes/\(id)/stat", expect: .badRequest)

        let tar = try await call("getArchive", .get, "/v1/sandboxes/\(id)/archive?path=/workspace/a.txt", expect: .ok)
        try await call("getArchive", .get, "/v1/sandboxes/\(id)/archive?path=/workspace/none", expect: .notFound)
        try await call(
            "executeTool", .post, "/v1/sandboxes/\(id)/execute",
            json: #"{"name": "bash", "input": {"command": "mkdir copy"}}"#,
            expect: .ok)
        try await call(
            "putArchive", .put, "/v1/sandboxes/\(id)/archive?path=/workspace/copy",
            body: Array(tar.body.readableBytesView),
            expect: .noContent)
        #expect(
            try await call("getFile", .get, "/v1/sandboxes/\(id)/files?path=/workspace/copy/a.txt", expect: .ok).text
                == "hello")
        try await call(
            "putArchive", .put, "/v1/sandboxes/\(id)/archive?path=/etc", body: Array(tar.body.readableBytesView),
            expect: .forbidden)
        try await call("putArchive", .put, "/v1/sandboxes/sb-missing/archive?path=/tmp", body: [0], expect: .notFound)

        try await commandsAndFiles(id)

        try await call("removeSandbox", .delete, "/v1/sandboxes/\(id)", expect: .noContent)
        try await call("removeSandbox", .delete, "/v1/sandboxes/\(id)", expect: .notFound)
    }

    func sessions() async throws {
        let created = try await call("createSession", .post, "/v1/sessions", expect: .created)
        let id = try created.decode(SessionInfo.self).id
        try await call(
            "createSession", .post, "/v1/sessions", json: #"{"metadata": {"k": "v"}}"#, expect: .created)
        // Only the local tenant chooses ids; the local walk shows the 409 for a taken one.
        try await call("createSession", .post, "/v1/sessions", json: #"{"id": "walk-named"}"#, expect: .badRequest)
        try await call("createSession", .post, "/v1/sessions", json: #"{"id": 7}"#, expect: .badRequest)
        try await call("listSessions", .get, "/v1/sessions", expect: .ok)
        try await call("getSession", .get, "/v1/sessions/\(id)", expect: .ok)
        try await call("getSession", .get, "/v1/sessions/se-missing", expect: .notFound)

        let events =
            #"{"events": [{"id": "walk-1", "type": "user.message", "data": {"text": "hi"}}], "expectedSeq": 1}"#
        try await call("appendEvents", .post, "/v1/sessions/\(id)/events", json: events, expect: .created)
        let retry = try await call("appendEvents", .post, "/v1/sessions/\(id)/events", json: events, expect: .ok)
        #expect(try retry.decode(AppendEventsResponse.self).written == 0)
        try await call(
            "appendEvents", .post, "/v1/sessions/\(id)/events", json: #"{"events": [{"type": "x"}], "expectedSeq": 9}"#,
            expect: .conflict)
        try await call(
            "appendEvents", .post, "/v1/sessions/\(id)/events", json: #"{"events": []}"#, expect: .badRequest)
        try await call("readEvents", .get, "/v1/sessions/\(id)/events?from=1&limit=10", expect: .ok)
        try await call("readEvents", .get, "/v1/sessions/\(id)/events?limit=0", expect: .badRequest)
        // The tail itself never ends; the live test in SessionRouteTests reads it.
        try await call("tailEvents", .get, "/v1/sessions/se-missing/events/stream", expect: .notFound)
        try await call("forkSession", .post, "/v1/sessions/\(id)/fork", json: #"{"at": 1}"#, expect: .created)
        try await call("forkSession", .post, "/v1/sessions/\(id)/fork", json: #"{}"#, expect: .badRequest)
        try await call(
            "forkSession", .post, "/v1/sessions/\(id)/fork", json: #"{"at": 0, "id": "walk-fork"}"#, expect: .badRequest
        )
        try await call("wakeSession", .post, "/v1/sessions/\(id)/wake", expect: .ok)
        try await call("runHarness", .post, "/v1/sessions/\(id)/harness/run", expect: .badRequest)
    }

    func agents() async throws {
        let started = try await call(
            "startAgent", .post, "/v1/agents", json: #"{"task": "say hello", "brain": "anthropic", "maxTurns": 2}"#,
            expect: .accepted)
        let session = try started.decode(HarnessStatus.self).session
        try await call("getHarness", .get, "/v1/sessions/\(session)/harness", expect: .ok)
        try await call("stopHarness", .post, "/v1/sessions/\(session)/harness/stop", expect: .ok)
        try await call(
            "runHarness", .post, "/v1/sessions/\(session)/harness/run", json: #"{"message": "again"}"#,
            expect: .accepted)
        let stopped = try await call("stopHarness", .post, "/v1/sessions/\(session)/harness/stop", expect: .ok)
        #expect(try stopped.decode(HarnessStatus.self).state == "idle")
        try await call("getHarness", .get, "/v1/sessions/se-missing/harness", expect: .notFound)
        try await call(
            "startAgent", .post, "/v1/agents", json: #"{"task": "x", "brain": "no-such-brain"}"#, expect: .badRequest)
        try await call(
            "startAgent", .post, "/v1/agents", json: #"{"task": "x", "brain": "scripted:/etc/passwd"}"#,
            expect: .forbidden)
    }

    /// As the local tenant (the unix socket): what only the operator may do.
    func operatorOnly() async throws {
        try await call("listWorkers", .get, "/v1/workers", expect: .ok)
        try await call(
            "createSession", .post, "/v1/sessions", json: #"{"id": "walk-named", "metadata": {"k": "v"}}"#,
            expect: .created)
        try await call("createSession", .post, "/v1/sessions", json: #"{"id": "walk-named"}"#, expect: .conflict)
        try await call(
            "forkSession", .post, "/v1/sessions/walk-named/fork", json: #"{"at": 0, "id": "walk-named"}"#,
            expect: .conflict)
        try await call("listTenants", .get, "/v1/tenants", expect: .ok)
        try await call("addTenant", .post, "/v1/tenants", json: #"{"name": "walker"}"#, expect: .created)
        try await call("addTenant", .post, "/v1/tenants", json: #"{"name": "walker"}"#, expect: .conflict)
        try await call("addTenant", .post, "/v1/tenants", json: #"{"name": "local"}"#, expect: .badRequest)
        try await call("removeTenant", .delete, "/v1/tenants/walker?purge=maybe", expect: .badRequest)
        try await call("removeTenant", .delete, "/v1/tenants/walker", expect: .ok)
        try await call("removeTenant", .delete, "/v1/tenants/walker", expect: .notFound)
        try await call("listPools", .get, "/v1/pools", expect: .ok)
    }

    /// As a network tenant: the operator's routes are refused.
    func tenantsRefused() async throws {
        try await call("listWorkers", .get, "/v1/workers", expect: .forbidden)
        try await call("listTenants", .get, "/v1/tenants", expect: .forbidden)
        try await call("addTenant", .post, "/v1/tenants", json: #"{"name": "mallory"}"#, expect: .forbidden)
        try await call("removeTenant", .delete, "/v1/tenants/tenant-b", expect: .forbidden)
    }

    func service() async throws {
        try await call("health", .get, "/v1/health", expect: .ok)
        let metrics = try await call("metrics", .get, "/metrics", expect: .ok)
        #expect(metrics.text.isEmpty || metrics.text.contains("corral_"))
        try await call("listPools", .get, "/v1/pools", expect: .ok)
    }
}
