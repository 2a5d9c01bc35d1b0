import CorralAPI
import CorralCore
import CorralSandbox
import CorralServer
import CorralSession
import Foundation
import Hummingbird
import HummingbirdTesting
import TestSupport
import Testing

@Suite("Tenants: reserved names, scripted brains, removal", .engine, .timeLimit(.minutes(10)))
struct TenantTests {
    // Security review finding 4: a tenant named `local` became the command line's tenant.
    @Test("every reserved name is refused by the registry, in one line with a hint")
    func reservedNames() async throws {
        try await withTemporaryDirectory { state in
            let registry = TenantRegistry(stateDirectory: state)
            for name in TenantRegistry.reservedNames.sorted() + ["corral-anything", "system-x"] {
                let error = await #expect(throws: CorralError.self) {
                    try await registry.add(TenantID(unchecked: name))
                }
                #expect(error?.code == .invalidArgument, "\(name)")
                #expect(error?.message.contains("name the system uses") == true, "\(name)")
                #expect(error?.message.contains("\n") == false && error?.hint != nil, "\(name)")
            }
            #expect(try await registry.list().isEmpty)
            _ = try await registry.add(TenantID(unchecked: "localhost-team"))
        }
    }

    // Security review finding 4: a tenants.json written before names were reserved (or by
    // hand) must not let a token act as `local`, the operator.
    @Test("a token stored under `local` in tenants.json is refused: no local session is seen, no host file read")
    func storedLocalTokenRefused() async throws {
        try await ServerFixture.with { fixture in
            let registry = fixture.server.tenants
            let token = try await registry.add(TenantID(unchecked: "rename-me"))
            let file = URL(fileURLWithPath: registry.location)
            let text = try String(contentsOf: file, encoding: .utf8)
            try text.replacingOccurrences(of: "\"rename-me\"", with: "\"local\"").write(
                to: file, atomically: true, encoding: .utf8)
            let store = try #require(fixture.server.sessions)
            let secret = try await store.create(
                id: SessionID(unchecked: "operator-only"), tenant: .local, metadata: [:])
            try await fixture.test { client in
                for (method, uri, json) in [
                    (HTTPRequest.Method.get, "/v1/sessions", nil), (.get, "/v1/sessions/\(secret.id)", nil),
                    (.post, "/v1/agents", #"{"task": "x", "brain": "scripted:/etc/shadow"}"#),
                    (.get, "/v1/sandboxes", nil),
                ] as [(HTTPRequest.Method, String, String?)] {
                    let response = try await client.call(method, uri, token: token, json: json)
                    #expect(response.status == .unauthorized, "\(method) \(uri): \(response.text)")
                    #expect(response.error?.message == "the bearer token is not valid")
                }
            }
        }
    }

    // Security review finding 4: a brain script path is the operator's setting. A network
    // tenant can write a session's first event itself; a wake must not take a script path from it.
    @Test("a forged session.created naming a scripted brain does not make harness/run read a host file")
    func forgedSpecOnWake() async throws {
        try await ServerFixture.with { fixture in
            let probe = fixture.state.appendingPathComponent("host-secret.jsonl")
            try Data(#"{"text": "the host's secret"}"#.utf8).write(to: probe)
            try await fixture.test { client in
                let token = fixture.tokenA
                let created = try await client.call(.post, "/v1/sessions", token: token)
                let id = try created.decode(SessionInfo.self).id
                let forged = """
                    {"events": [
                      {"id": "session.created", "type": "session.created", "data": {"agent": {"brain": {"provider": "scripted", "model": "scripted", "script": "\(probe.path)"}, "limits": {"maxTurns": 2}, "contextBudget": 100000, "hands": {}}}},
                      {"id": "user-1", "type": "user.message", "data": {"text": "go"}}
                    ], "expectedSeq": 1}
                    """
                #expect(
                    try await client.call(.post, "/v1/sessions/\(id)/events", token: token, json: forged).status
                        == .created
                )
                let run = try await client.call(.post, "/v1/sessions/\(id)/harness/run", token: token, json: "{}")
                #expect(run.status == .forbidden, "\(run.text)")
                #expect(run.error?.code == "permission_denied")
                let withMessage = try await client.call(
                    .post, "/v1/sessions/\(id)/harness/run", token: token, json: #"{"message": "again"}"#)
                #expect(withMessage.status == .forbidden)
                try await Task.sleep(for: .milliseconds(300))
                let events = try await client.call(.get, "/v1/sessions/\(id)/events", token: token).text
                #expect(!events.contains("the host's secret"), "the script was read: \(events)")
                #expect(!events.contains("brain.response"))
            }
        }
    }

    // Security review finding 10: concurrent `tenant add` calls lost updates.
    @Test("40 concurrent adds in one process all land")
    func concurrentAdds() async throws {
        try await withTemporaryDirectory { state in
            let registry = TenantRegistry(stateDirectory: state)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<40 {
                    group.addTask { _ = try await registry.add(TenantID(unchecked: "t\(index)")) }
                }
                try await group.waitForAll()
            }
            #expect(try await registry.list().count == 40)
            // A second registry object on the same file (another process's view) sees them too.
            #expect(try await TenantRegistry(stateDirectory: state).list().count == 40)
        }
    }

    // Security review finding 10: tenant management is the operator's, never a network tenant's.
    @Test("the tenant routes answer 403 to a network tenant and work for the local one")
    func tenantRoutes() async throws {
        try await ServerFixture.with { fixture in
            try await fixture.test { client in
                for (method, uri, json) in [
                    (HTTPRequest.Method.get, "/v1/tenants", nil), (.post, "/v1/tenants", #"{"name": "mallory"}"#),
                    (.delete, "/v1/tenants/tenant-b?purge=true", nil),
                ] as [(HTTPRequest.Method, String, String?)] {
                    let response = try await client.call(method, uri, token: fixture.tokenA, json: json)
                    #expect(response.status == .forbidden, "\(method) \(uri): \(response.text)")
                }
            }
            #expect(try await fixture.server.tenants.contains(TenantID(unchecked: "tenant-b")))
            try await Application(router: fixture.server.router(auth: .local)).test(.router) { client in
                let added = try await client.call(.post, "/v1/tenants", token: nil, json: #"{"name": "carol"}"#)
                #expect(added.status == .created)
                let token = try added.decode(AddedTenant.self).token
                #expect(try await fixture.server.tenants.tenant(forToken: token) == TenantID(unchecked: "carol"))
                let reserved = try await client.call(.post, "/v1/tenants", token: nil, json: #"{"name": "local"}"#)
                #expect(reserved.status == .badRequest && reserved.error?.hint != nil, "\(reserved.text)")
                let listed = try await client.call(.get, "/v1/tenants", token: nil).decode([TenantSummary].self)
                #expect(Set(listed.map(\.name)) == ["tenant-a", "tenant-b", "carol"])
                #expect(!(try await client.call(.get, "/v1/tenants", token: nil).text.contains("corral_")))
                #expect(try await client.call(.delete, "/v1/tenants/carol", token: nil).status == .ok)
                #expect(try await fixture.server.tenants.tenant(forToken: token) == nil)
            }
        }
    }

    // Security review finding 10: `rm` left the tenant's sandboxes running, and a new tenant of
    // the same name inherited them.
    @Test("rm refuses while the tenant owns things and names them; purge removes them; a new tenant starts empty")
    func removal() async throws {
        try await ServerFixture.with { fixture in
            let local = Application(router: fixture.server.router(auth: .local))
            let alice = try await fixture.server.tenants.add(TenantID(unchecked: "alice"))
            let (sandbox, session) = try await fixture.test { client in
                (
                    try await client.call(.post, "/v1/sandboxes", token: alice, json: "{}").decode(CreatedSandbox.self)
                        .id,
                    try await client.call(.post, "/v1/sessions", token: alice).decode(SessionInfo.self).id
                )
            }
            try await local.test(.router) { client in
                let refused = try await client.call(.delete, "/v1/tenants/alice", token: nil)
                #expect(refused.status == .conflict)
                #expect(refused.error?.message.contains(sandbox.rawValue) == true, "\(refused.text)")
                #expect(refused.error?.message.contains(session.rawValue) == true, "\(refused.text)")
                #expect(refused.error?.hint?.contains("--purge") == true)
            }
            #expect(try await fixture.server.tenants.tenant(forToken: alice) != nil, "a refused rm keeps the token")
            let again = try await local.test(.router) { client in
                // A name with leftovers cannot be given out again; the purge removes them.
                try await client.call(.delete, "/v1/tenants/alice?purge=true", token: nil)
            }
            #expect(again.status == .ok, "\(again.text)")
            let removed = try again.decode(RemovedTenant.self).removed.owned
            #expect(removed["sandboxes"] == [sandbox.rawValue] && removed["sessions"] == [session.rawValue])
            #expect(try await fixture.server.tenants.tenant(forToken: alice) == nil)
            #expect(try await fixture.server.runner.provisioner.list(tenant: TenantID(unchecked: "alice")).isEmpty)
            await #expect(throws: (any Error).self) {
                _ = try await fixture.engine.inspectContainer("corral.alice.\(sandbox)")
            }
            let store = try #require(fixture.server.sessions)
            await #expect(throws: CorralError.self) { _ = try await store.session(session) }

            let newcomer = try await fixture.server.tenants.add(TenantID(unchecked: "alice"))
            try await fixture.test { client async throws in
                #expect(
                    try await client.call(.get, "/v1/sandboxes", token: newcomer).decode([SandboxInfo].self).isEmpty)
                #expect(try await client.call(.get, "/v1/sessions", token: newcomer).decode([SessionInfo].self).isEmpty)
                #expect(try await client.call(.get, "/v1/sessions/\(session)", token: newcomer).status == .notFound)
                #expect(try await client.call(.get, "/v1/sandboxes/\(sandbox)", token: newcomer).status == .notFound)
                #expect(try await client.call(.get, "/v1/sandboxes", token: alice).status == .unauthorized)
            }
        }
    }

    // Security review finding 10: what a request under way makes while its tenant is removed
    // must not survive for a later tenant of the same name.
    @Test("sandboxes and sessions being made while the tenant is purged are all gone afterwards")
    func purgeRace() async throws {
        try await ServerFixture.with { fixture in
            let name = TenantID(unchecked: "racer")
            let token = try await fixture.server.tenants.add(name)
            let server = fixture.server
            try await fixture.test { client in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<6 {
                        group.addTask {
                            if index % 2 == 0 {
                                _ = try await client.call(.post, "/v1/sandboxes", token: token, json: "{}")
                            } else {
                                _ = try await client.call(.post, "/v1/sessions", token: token)
                            }
                        }
                    }
                    group.addTask {
                        try await Task.sleep(for: .milliseconds(150))
                        try await Application(router: server.router(auth: .local)).test(.router) { local in
                            let removed = try await local.call(.delete, "/v1/tenants/racer?purge=true", token: nil)
                            #expect(removed.status == .ok, "\(removed.text)")
                        }
                    }
                    try await group.waitForAll()
                }
            }
            #expect(try await server.runner.provisioner.list(tenant: name).isEmpty, "a sandbox outlived the purge")
            #expect(try await (server.sessions?.list() ?? []).filter { $0.tenant == name }.isEmpty)
            let fresh = try await server.tenants.add(name)
            try await fixture.test { client async throws in
                #expect(try await client.call(.get, "/v1/sandboxes", token: fresh).decode([SandboxInfo].self).isEmpty)
            }
        }
    }
}
