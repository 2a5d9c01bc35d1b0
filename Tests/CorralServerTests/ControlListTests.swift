import CorralCore
import CorralFleet
import CorralServer
import CorralService
import CorralSession
import CorralSessionPostgres
import Foundation
import Logging
import TestSupport
import Testing

/// Where the control plane's lists (tenants, worker tokens) are kept: beside the session
/// store, in `$STATE/*.json` with the files, or in PostgreSQL's `record_lists`, which every
/// replica shares. The same cases run on both, each with two instances over the same space,
/// as two processes (or two replicas) would have.
@Suite("Tenants and worker tokens on files and in PostgreSQL")
struct ControlListTests {
    enum Kind: String, Sendable, CustomTestStringConvertible {
        case file, postgres
        var testDescription: String { rawValue }

        static let all: [Kind] = {
            if TestEnvironment.shouldRunStoreTests { return [.file, .postgres] }
            print("note: \(TestEnvironment.storeSkipReason)")
            return [.file]
        }()
    }

    /// Two independent stores over one space: the same directory, or one PostgreSQL schema of
    /// this test's own (dropped after).
    static func withTwoStores(
        _ kind: Kind, _ body: (_ first: any SessionStore, _ second: any SessionStore, _ state: URL) async throws -> Void
    ) async throws {
        try await withTemporaryDirectory { state in
            switch kind {
            case .file:
                let sessions = state.appendingPathComponent("sessions")
                try await body(FileSessionStore(directory: sessions), FileSessionStore(directory: sessions), state)
            case .postgres:
                try await ReplicaTenantTests.withTwoStores { try await body($0, $1, state) }
            }
        }
    }

    @Test(
        "a tenant added through one instance is seen, authenticated and removed through the other", arguments: Kind.all)
    func tenantsAcrossInstances(kind: Kind) async throws {
        try await Self.withTwoStores(kind) { first, second, state in
            let one = TenantRegistry(store: first, stateDirectory: state)
            let two = TenantRegistry(store: second, stateDirectory: state)
            if kind == .postgres {
                #expect(one.location.contains("list tenants") && !one.location.contains("tenants.json"))
                #expect(!FileManager.default.fileExists(atPath: state.appendingPathComponent("tenants.json").path))
            } else {
                #expect(one.location.hasSuffix("tenants.json"))
            }
            #expect(try await two.list().isEmpty)

            let alice = TenantID(unchecked: "alice")
            let token = try await one.add(alice, groups: ["vpc"])
            #expect(try await two.tenant(forToken: token) == alice)
            #expect(try await two.placementGroups(of: alice) == ["vpc"])
            guard case .tenant(_, let hash) = try await two.authenticate(token: token) else {
                Issue.record("the second instance did not take the token")
                return
            }
            #expect(try await one.isCurrent(alice, tokenSHA256: hash))

            // A name taken through one instance is refused through the other, and the refused
            // change writes nothing.
            await #expect(throws: CorralError.self) { try await two.add(alice) }
            #expect(try await one.list().map(\.id) == [alice])

            // Removed through the second: the first refuses the token at its next read.
            let removed = try await two.remove(alice)
            #expect(removed?.id == alice)
            #expect(try await one.tenant(forToken: token) == nil)
            #expect(try await one.isCurrent(alice, tokenSHA256: hash) == false)
            #expect(try await one.contains(alice) == false)

            // Put back (an undone removal) through the first: the second takes the token again.
            if let removed { try await one.reinstate(removed) }
            #expect(try await two.tenant(forToken: token) == alice)
        }
    }

    @Test("changes made at once through two instances are all kept", arguments: Kind.all)
    func concurrentChangesAreAllKept(kind: Kind) async throws {
        try await Self.withTwoStores(kind) { first, second, state in
            let registries = [
                TenantRegistry(store: first, stateDirectory: state),
                TenantRegistry(store: second, stateDirectory: state),
            ]
            let tokens = try await withThrowingTaskGroup(of: (TenantID, String).self) { group in
                for index in 0..<24 {
                    group.addTask {
                        let id = TenantID(unchecked: "tenant-\(index)")
                        return (id, try await registries[index % 2].add(id))
                    }
                }
                var tokens: [TenantID: String] = [:]
                for try await (id, token) in group { tokens[id] = token }
                return tokens
            }
            for registry in registries {
                #expect(Set(try await registry.list().map(\.id)) == Set(tokens.keys))
            }
            for (id, token) in tokens {
                #expect(try await registries[1].tenant(forToken: token) == id)
            }
        }
    }

    @Test("a worker token made through one instance admits through the other until it is removed", arguments: Kind.all)
    func workerTokensAcrossInstances(kind: Kind) async throws {
        try await Self.withTwoStores(kind) { first, second, state in
            let one = WorkerTokenRegistry(store: first, stateDirectory: state)
            let two = WorkerTokenRegistry(store: second, stateDirectory: state)
            let (token, entry) = try await one.add(group: "vpc")
            #expect(try await two.entry(forToken: token)?.group == "vpc")
            #expect(try await two.list().map(\.id) == [entry.id])
            #expect(await one.isKept(id: entry.id))
            #expect(try await two.remove(id: entry.id))
            #expect(await one.isKept(id: entry.id) == false)
            #expect(try await one.entry(forToken: token) == nil)
            #expect(try await one.remove(id: entry.id) == false)
            // Tenants and worker tokens are lists of their own.
            #expect(try await TenantRegistry(store: first, stateDirectory: state).list().isEmpty)
        }
    }
}

@Suite("Two replicas of the service over one PostgreSQL store", .engine)
struct ReplicaTenantTests {
    struct Created: Decodable { var id: String }

    @Test(
        "a tenant added on one replica is served by the other, and once removed there the first refuses it at once",
        .enabled(if: TestEnvironment.shouldRunStoreTests, Comment(rawValue: TestEnvironment.storeSkipReason)))
    func tenantsAcrossReplicas() async throws {
        try await Self.withTwoStores { first, second in
            try await ServerFixture.with(sessions: first) { one in
                let two = try await ServerFixture(sessions: second, sharing: one)
                do {
                    try await Self.exercise(one, two)
                } catch {
                    await two.cleanUp()
                    throw error
                }
                await two.cleanUp()
            }
        }
    }

    /// Two stores over one PostgreSQL schema of the test's own, as two replicas have; the
    /// schema is dropped after.
    static func withTwoStores(_ body: (PostgresSessionStore, PostgresSessionStore) async throws -> Void)
        async throws
    {
        guard let text = TestEnvironment.storeURL else {
            Issue.record(Comment(rawValue: TestEnvironment.storeMissingFailure))
            return
        }
        var url = try PostgresStoreURL(parsing: text)
        url.schema = "t_\(UInt64.random(in: 0...UInt64.max))"
        let logger = Logger(label: "corral.test")
        let first = try await PostgresSessionStore.connect(.init(url: url), logger: logger)
        let second = try await PostgresSessionStore.connect(.init(url: url), logger: logger)
        func closeBoth() async {
            try? await first.dropSchema()
            await first.shutdown()
            await second.shutdown()
        }
        do {
            try await body(first, second)
        } catch {
            await closeBoth()
            throw error
        }
        await closeBoth()
    }

    @Test(
        "a tenant's session quota holds across two replicas creating at once",
        .enabled(if: TestEnvironment.shouldRunStoreTests, Comment(rawValue: TestEnvironment.storeSkipReason)))
    func quotaAcrossReplicas() async throws {
        try await Self.withTwoStores { first, second in
            let one = try await ServerFixture(sessions: first, sessionsPerTenant: 5)
            let two = try await ServerFixture(sessions: second, sharing: one, sessionsPerTenant: 5)
            let codes = try await one.test { replicaOne in
                try await two.test { replicaTwo in
                    try await withThrowingTaskGroup(of: Int.self) { group in
                        for index in 0..<12 {
                            group.addTask {
                                let client = index % 2 == 0 ? replicaOne : replicaTwo
                                return try await client.call(.post, "/v1/sessions", token: one.tokenA, json: "{}")
                                    .status.code
                            }
                        }
                        return try await group.reduce(into: []) { $0.append($1) }
                    }
                }
            }
            await one.cleanUp()
            await two.cleanUp()
            #expect(codes.filter { $0 == 201 }.count == 5, "\(codes.sorted())")
            #expect(codes.filter { $0 == 429 }.count == 7, "\(codes.sorted())")
            #expect(try await first.list().filter { $0.tenant.rawValue == "tenant-a" }.count == 5)
        }
    }

    // Without the published counts, each replica counts only the sandboxes on its own engine
    // and hands, and lets two through: four 201s here, and a create after the removal would
    // not need it.
    @Test(
        "a tenant's sandbox quota holds across two replicas creating at once, and a removal through one frees room on the other",
        .enabled(if: TestEnvironment.shouldRunStoreTests, Comment(rawValue: TestEnvironment.storeSkipReason)))
    func sandboxQuotaAcrossReplicas() async throws {
        try await Self.withTwoStores { first, second in
            let one = try await ServerFixture(sandboxesPerTenant: 2, sessions: first)
            let two = try await ServerFixture(sandboxesPerTenant: 2, sessions: second, sharing: one)
            do {
                try await one.test { replicaOne in
                    try await two.test { replicaTwo in
                        let answers = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                            for index in 0..<4 {
                                group.addTask {
                                    let client = index % 2 == 0 ? replicaOne : replicaTwo
                                    let answer = try await client.call(
                                        .post, "/v1/sandboxes", token: one.tokenA, json: "{}")
                                    return (Int(answer.status.code), answer.text)
                                }
                            }
                            return try await group.reduce(into: []) { $0.append($1) }
                        }
                        let codes = answers.map(\.0).sorted()
                        #expect(codes == [201, 201, 429, 429], "\(answers)")
                        let mine = try await replicaOne.call(.get, "/v1/sandboxes", token: one.tokenA)
                            .decode([Created].self)
                        let theirs = try await replicaTwo.call(.get, "/v1/sandboxes", token: one.tokenA)
                            .decode([Created].self)
                        #expect(mine.count + theirs.count == 2)

                        // Full: a removal through the replica that holds one frees room for the
                        // other at once (it published its new count before answering).
                        let (holder, other) = mine.isEmpty ? (replicaTwo, replicaOne) : (replicaOne, replicaTwo)
                        let victim = try #require(mine.first ?? theirs.first)
                        let refused = try await other.call(.post, "/v1/sandboxes", token: one.tokenA, json: "{}")
                        #expect(refused.status.code == 429, "\(refused.text)")
                        let removed = try await holder.call(.delete, "/v1/sandboxes/\(victim.id)", token: one.tokenA)
                        #expect(removed.status.code == 204 || removed.status.code == 200, "\(removed.text)")
                        let admitted = try await other.call(.post, "/v1/sandboxes", token: one.tokenA, json: "{}")
                        #expect(admitted.status.code == 201, "\(admitted.text)")
                        // The other tenant's quota is its own.
                        let b = try await replicaTwo.call(.post, "/v1/sandboxes", token: one.tokenB, json: "{}")
                        #expect(b.status.code == 201, "\(b.text)")
                    }
                }
            } catch {
                await one.cleanUp()
                await two.cleanUp()
                throw error
            }
            await one.cleanUp()
            await two.cleanUp()
        }
    }

    static func exercise(_ one: ServerFixture, _ two: ServerFixture) async throws {
        try await one.test { replicaOne in
            try await two.test { replicaTwo in
                // The tenants the first replica added are served by the second, sessions too.
                let created = try await replicaOne.call(.post, "/v1/sessions", token: one.tokenA, json: "{}")
                #expect(created.status.code == 201, "\(created.text)")
                let id = try created.decode(Created.self).id
                let read = try await replicaTwo.call(.get, "/v1/sessions/\(id)", token: two.tokenA)
                #expect(read.status.code == 200, "\(read.text)")
                let other = try await replicaTwo.call(.get, "/v1/sessions/\(id)", token: two.tokenB)
                #expect(other.status.code == 404, "another tenant sees the session: \(other.text)")

                // Added on the second replica: the first takes its token.
                let carol = TenantID(unchecked: "carol")
                let token = try await two.server.tenants.add(carol)
                let listed = try await replicaOne.call(.get, "/v1/sessions", token: token)
                #expect(listed.status.code == 200, "\(listed.text)")

                // Removed on the first: the second refuses it at the next request.
                #expect(try await one.server.tenants.remove(carol) != nil)
                let refused = try await replicaTwo.call(.get, "/v1/sessions", token: token)
                #expect(refused.status.code == 401, "\(refused.text)")
            }
        }
    }
}
