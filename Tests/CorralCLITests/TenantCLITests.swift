import CorralAPI
import CorralCore
import CorralSessionPostgres
import DockerEngine
import Foundation
import Logging
import TestSupport
import Testing

/// `corral tenant` against a real service and state directory.
@Suite("corral tenant", .engine, .serialized, .timeLimit(.minutes(10)))
struct TenantCLITests {
    // Security review finding 4: a tenant named `local` became the command line's tenant.
    @Test("reserved names are refused in one line with a hint, with and without a service")
    func reservedNames() async throws {
        try await ServiceFixture.with { service in
            for running in [false, true] {
                if running { try await service.start() }
                for name in ["local", "operator", "system", "default", "corral", "all", "none", "corral-x"] {
                    let result = try await service.local(["tenant", "add", name])
                    #expect(result.status == 2, "\(name): \(result.stdout)")
                    #expect(result.stdout.isEmpty, "\(name): a token was printed")
                    let lines = result.stderr.split(separator: "\n", omittingEmptySubsequences: false)
                    #expect(lines.count == 3 && lines[2].isEmpty, "\(result.stderr)")
                    #expect(lines.first == "corral: '\(name)' is a name the system uses and cannot be a tenant")
                    #expect(lines.dropFirst().first?.hasPrefix("hint: pick another name") == true)
                }
            }
            let listed = try await service.local(["tenant", "ls", "--json"])
            #expect(
                try JSONDecoder().decode([JSONValue].self, from: Data(listed.stdout.utf8)).isEmpty, "\(listed.stdout)")
        }
    }

    // Security review finding 4: an existing tenants.json holding a reserved name must not
    // authenticate as it; the refusal is logged.
    @Test("a token stored under `local` in an old tenants.json is refused and logged; it sees no local session")
    func oldLocalEntry() async throws {
        try await ServiceFixture.with { service in
            let token = try await service.token(for: "to-be-local")
            let file = service.state.appendingPathComponent("tenants.json")
            let text = try String(contentsOf: file, encoding: .utf8)
            try text.replacingOccurrences(of: "\"to-be-local\"", with: "\"local\"").write(
                to: file, atomically: true, encoding: .utf8)
            try await service.start(environment: ["CORRAL_LOG": "warning"])
            let secret = try await service.local(["session", "create"])
            let id = secret.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            for arguments in [["session", "ls"], ["session", "show", id], ["sandbox", "ls"]] {
                let result = try await service.remote(arguments, token: token)
                #expect(result.status == 1, "\(arguments): \(result.stdout)")
                #expect(result.stderr.hasPrefix("corral: the bearer token is not valid\n"), "\(result.stderr)")
                #expect(!result.stdout.contains(id))
            }
            #expect(service.serviceLog.contains("reserved tenant name"), "\(service.serviceLog)")
            let listed = try await service.local(["tenant", "ls"])
            #expect(listed.stdout.contains("local (reserved name: token refused)"), "\(listed.stdout)")
            #expect(listed.stderr.contains("hint: remove it with `corral tenant rm local`"))
            // The stale entry can be removed; nothing of the operator's goes with it.
            let removed = try await service.local(["tenant", "rm", "local"])
            #expect(removed.status == 0, "\(removed.stderr)")
            #expect(try await service.local(["session", "show", id]).status == 0)
            let purge = try await service.local(["tenant", "rm", "local", "--purge"])
            #expect(purge.status == 2 && purge.stderr.contains("name the system uses"), "\(purge.stderr)")
        }
    }

    // Security review finding 4: a network tenant can write its session's first event, and with
    // it a scripted brain's path; neither the service's wake nor the operator's own `agent wake`
    // may read that file.
    @Test("a forged scripted brain in a tenant's session is refused by agent wake, through the service and without")
    func forgedScriptedBrain() async throws {
        try await ServiceFixture.with { service in
            try await service.start()
            let probe = service.state.appendingPathComponent("probe.jsonl")
            try Data(#"{"text": "read from the host"}"#.utf8).write(to: probe)
            let mallory = try await service.token(for: "mallory")
            let id = try await service.remote(["session", "create"], token: mallory).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let forged = [
                #"{"id":"session.created","type":"session.created","data":{"agent":{"brain":{"provider":"scripted","model":"scripted","script":"\#(probe.path)"},"limits":{"maxTurns":2},"contextBudget":100000,"hands":{}}}}"#,
                #"{"id":"user-1","type":"user.message","data":{"text":"go"}}"#,
            ].joined(separator: "\n")
            #expect(try await service.remote(["session", "append", id], token: mallory, stdin: forged).status == 0)
            let remote = try await service.remote(["agent", "wake", id], token: mallory)
            #expect(remote.status == 1, "\(remote.stdout)")
            #expect(
                remote.stderr.hasPrefix("corral: scripted brains are for the local tenant only"), "\(remote.stderr)")
            service.kill()
            let embedded = try await service.local(["agent", "wake", id])
            #expect(embedded.status == 2, "\(embedded.stdout) \(embedded.stderr)")
            #expect(embedded.stderr.contains("recorded scripted brain is not used"), "\(embedded.stderr)")
            let log = try await service.local(["session", "show", id])
            #expect(!log.stdout.contains("read from the host"), "\(log.stdout)")
        }
    }

    // Security review finding 10: `tenant rm` left the tenant's sandboxes running, and `tenant
    // add` of the same name inherited its sandboxes and sessions.
    @Test(
        "through the service: rm refuses and names what the tenant owns, --purge removes it, a new tenant starts empty")
    func removeThroughService() async throws {
        try await ServiceFixture.with { service in
            try await service.start()
            let alice = try await service.token(for: "alice")
            let sandbox = try await service.remote(["sandbox", "create", "--json"], token: alice)
            #expect(sandbox.status == 0, "\(sandbox.stderr)")
            let sandboxID = try #require(
                try JSONDecoder().decode(JSONValue.self, from: Data(sandbox.stdout.utf8))["id"]?.stringValue)
            let sessionID = try await service.remote(["session", "create"], token: alice).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let stored = try await service.local(
                ["vault", "put", "alicekey", "--scope", "github.com/alice", "--tenant", "alice"], stdin: "token\n")
            #expect(stored.status == 0, "\(stored.stderr)")

            let refused = try await service.local(["tenant", "rm", "alice"])
            #expect(refused.status == 1)
            let lines = refused.stderr.split(separator: "\n")
            #expect(lines.count == 2, "\(refused.stderr)")
            #expect(lines.first?.hasPrefix("corral: tenant 'alice' owns ") == true)
            #expect(refused.stderr.contains(sandboxID) && refused.stderr.contains(sessionID), "\(refused.stderr)")
            #expect(refused.stderr.contains("alicekey"), "the credential is named: \(refused.stderr)")
            #expect(lines.last?.contains("--purge") == true)
            #expect(try await service.remote(["sandbox", "ls"], token: alice).status == 0, "the token still works")

            let purged = try await service.local(["tenant", "rm", "alice", "--purge"])
            #expect(purged.status == 0, "\(purged.stderr)")
            #expect(purged.stdout.contains(sandboxID) && purged.stdout.contains(sessionID), "\(purged.stdout)")
            #expect(purged.stdout.contains("alicekey"), "\(purged.stdout)")
            #expect(try await Self.containerExists(sandboxID, tenant: "alice") == false, "the sandbox still runs")
            let credentials = try await service.local(["vault", "ls", "--tenant", "alice"])
            #expect(credentials.status == 0 && !credentials.stdout.contains("alicekey"), "\(credentials.stdout)")
            let gone = try await service.remote(["sandbox", "ls"], token: alice)
            #expect(gone.status == 1 && gone.stderr.hasPrefix("corral: the bearer token is not valid"))

            let newcomer = try await service.token(for: "alice")
            let sandboxes = try await service.remote(["sandbox", "ls", "--json"], token: newcomer)
            #expect(sandboxes.status == 0 && !sandboxes.stdout.contains(sandboxID), "\(sandboxes.stdout)")
            let sessions = try await service.remote(["session", "ls"], token: newcomer)
            #expect(sessions.status == 0 && !sessions.stdout.contains(sessionID), "\(sessions.stdout)")
            let old = try await service.remote(["session", "show", sessionID], token: newcomer)
            #expect(old.status == 1 && old.stderr.contains("not found"))
        }
    }

    // Security review finding 10: the same without a service, on the state directory's files.
    @Test("without a service: rm refuses, add refuses a name with leftovers, --purge cleans them up")
    func removeWithoutService() async throws {
        try await ServiceFixture.with { service in
            try await service.start()
            let bob = try await service.token(for: "bob")
            let sandbox = try await service.remote(["sandbox", "create", "--json"], token: bob)
            let sandboxID = try #require(
                try JSONDecoder().decode(JSONValue.self, from: Data(sandbox.stdout.utf8))["id"]?.stringValue)
            let sessionID = try await service.remote(["session", "create"], token: bob).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            service.kill()

            let refused = try await service.local(["tenant", "rm", "bob"])
            #expect(refused.status == 1 && refused.stderr.contains(sandboxID), "\(refused.stderr)")
            // A stale tenants.json without bob but with his things (a crash mid-purge, an old
            // corral): a new bob is refused rather than given them.
            let file = service.state.appendingPathComponent("tenants.json")
            try Data("[]".utf8).write(to: file)
            let inherit = try await service.local(["tenant", "add", "bob"])
            #expect(inherit.status == 1 && inherit.stdout.isEmpty, "\(inherit.stdout)")
            #expect(inherit.stderr.contains("left 1 sandbox and 1 session"), "\(inherit.stderr)")
            #expect(inherit.stderr.contains("hint: remove them with `corral tenant rm bob --purge`"))

            let purged = try await service.local(["tenant", "rm", "bob", "--purge"])
            #expect(purged.status == 0, "\(purged.stderr)")
            #expect(purged.stdout.contains(sandboxID) && purged.stdout.contains(sessionID))
            #expect(try await Self.containerExists(sandboxID, tenant: "bob") == false)
            let added = try await service.local(["tenant", "add", "bob"])
            #expect(added.status == 0 && added.stdout.hasPrefix("corral_"), "\(added.stderr)")
        }
    }

    // Security review finding 10: six concurrent `tenant add` calls lost updates.
    @Test("six concurrent `tenant add` processes all land, with and without a service")
    func concurrentAdds() async throws {
        try await ServiceFixture.with { service in
            for running in [false, true] {
                if running { try await service.start() }
                for round in 0..<3 {
                    let names = (0..<6).map { "r\(running ? 1 : 0)-\(round)-\($0)" }
                    let processes = try names.map {
                        try RunningCorral(["tenant", "add", $0], environment: service.serviceEnvironment)
                    }
                    for process in processes {
                        let result = try await onOwnThread { try process.waitForExit() }
                        #expect(result.status == 0, "\(result.stderr)")
                    }
                }
            }
            let listed = try await service.local(["tenant", "ls", "--json"])
            let rows = try JSONDecoder().decode([JSONValue].self, from: Data(listed.stdout.utf8))
            #expect(rows.count == 36, "\(rows.count) of 36 tenants were kept")
        }
    }

    static func containerExists(_ sandbox: String, tenant: String) async throws -> Bool {
        let engine = try DockerEngineClient(parsing: TestEnvironment.engineEndpoint)
        defer { engine.shutdown() }
        let containers = try await engine.listContainers(all: true, labels: [])
        return containers.contains { $0.name == "corral.\(tenant).\(sandbox)" }
    }

    // Issue 13: with `[store] url` (here CORRAL_STORE_URL), tenants and worker tokens live in
    // the database, so every host and replica that names it sees the same ones.
    @Test(
        "with a PostgreSQL store, tenants and worker tokens made on one host are listed and removed on another",
        .enabled(if: TestEnvironment.shouldRunStoreTests, Comment(rawValue: TestEnvironment.storeSkipReason)))
    func tenantsInTheStore() async throws {
        guard let url = TestEnvironment.freshStoreURL() else { return }
        try await ServiceFixture.with { service in
            // Two state directories, as two hosts would have; no service runs on either.
            func on(_ state: URL, _ arguments: [String]) async throws -> ProcessResult {
                let environment = service.clientEnvironment(state: state, token: nil).merging(["CORRAL_STORE_URL": url])
                {
                    $1
                }
                return try await onOwnThread { try runCorralBlocking(arguments, environment: environment) }
            }
            let (hostA, hostB) = (service.state, service.embeddedState)
            let added = try await on(hostA, ["tenant", "add", "dave", "--group", "vpc"])
            #expect(added.status == 0 && added.stdout.hasPrefix("corral_"), "\(added.stderr)")
            #expect(!FileManager.default.fileExists(atPath: hostA.appendingPathComponent("tenants.json").path))
            let listed = try await on(hostB, ["tenant", "ls", "--json"])
            #expect(
                listed.status == 0 && listed.stdout.contains("\"dave\"") && listed.stdout.contains("vpc"), "\(listed)")

            let token = try await on(hostB, ["worker", "token", "add", "--group", "vpc", "--json"])
            #expect(token.status == 0, "\(token.stderr)")
            let id = try JSONDecoder().decode([String: String].self, from: Data(token.stdout.utf8))["id"] ?? "?"
            let tokens = try await on(hostA, ["worker", "token", "ls"])
            #expect(tokens.stdout.contains(id) && tokens.stdout.contains("vpc"), "\(tokens)")
            #expect(try await on(hostA, ["worker", "token", "rm", id]).status == 0)
            #expect(try await on(hostB, ["worker", "token", "ls"]).stdout.contains(id) == false)

            let removed = try await on(hostB, ["tenant", "rm", "dave"])
            #expect(removed.status == 0, "\(removed.stderr)")
            #expect(try await on(hostA, ["tenant", "ls", "--json"]).stdout.contains("dave") == false)

            // The files of either host were never used.
            let plain = service.clientEnvironment(state: hostA, token: nil)
            let files = try await onOwnThread { try runCorralBlocking(["tenant", "ls", "--json"], environment: plain) }
            #expect(try JSONDecoder().decode([JSONValue].self, from: Data(files.stdout.utf8)).isEmpty, "\(files)")
        }
        let store = try await PostgresSessionStore.connect(url: url, logger: Logger(label: "corral.test"))
        try? await store.dropSchema()
        await store.shutdown()
    }
}
