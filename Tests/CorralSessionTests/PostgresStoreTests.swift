import CorralCore
import Foundation
import TestSupport
import Testing

@testable import CorralSession
@testable import CorralSessionPostgres

@Suite("Fencing and awkward input, on every store")
struct FencingAndInputTests {
    @Test(
        "two writers with leases on one session: once the second wakes it, every append of the first is refused",
        arguments: StoreKind.all)
    func staleWriterFenced(_ kind: StoreKind) async throws {
        try await withStore(kind) { first, fixture in
            let second = try await fixture.open()
            let id = try await first.create().id
            let old = try await first.wake(id)
            // The first writer appends as fast as it can; the second takes over part way.
            let zombie = Task { () -> (acked: [UInt64], refused: Int) in
                var acked: [UInt64] = []
                var refused = 0
                for index in 0..<400 {
                    do {
                        let result = try await first.append(id, [event(id: "old-\(index)")], lease: old)
                        acked.append(result.firstSeq)
                    } catch let error as CorralError where error.code == .conflict {
                        #expect(error.message.contains("is stale"))
                        refused += 1
                        if refused >= 20 { break }
                    }
                }
                return (acked, refused)
            }
            while try await second.session(id).head < 5 { try await Task.sleep(for: .milliseconds(2)) }
            let fresh = try await second.wake(id)
            for index in 0..<20 { _ = try await second.append(id, [event(id: "new-\(index)")], lease: fresh) }
            let (acked, refused) = try await zombie.value
            #expect(refused > 0, "the stale writer was never refused")
            let events = try await second.all(id)
            // Nothing of the old epoch lands after the first event of the new one.
            let firstNew = try #require(events.firstIndex { $0.epoch == fresh.epoch })
            #expect(events[firstNew...].allSatisfy { $0.epoch == fresh.epoch && $0.id.rawValue.hasPrefix("new-") })
            #expect(events[..<firstNew].allSatisfy { $0.epoch == old.epoch })
            #expect(events.map(\.seq) == Array(1...UInt64(events.count)))
            #expect(acked == Array(1...UInt64(firstNew)))
            await second.close()
        }
    }

    @Test(
        "ids that break the stores' rules are refused as bad input; NUL and odd text are kept as given",
        arguments: StoreKind.all)
    func constraintsAndText(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            for bad in ["Bad", "a/b", "-lead", String(repeating: "x", count: 65), ""] {
                await #expect {
                    _ = try await store.create(id: SessionID(unchecked: bad))
                } throws: { error in
                    let error = error as? CorralError
                    return error?.code == .invalidArgument && error?.message.contains("invalid session id") == true
                }
            }
            let metadata = ["note": "nul \u{0} here", "ünï": "漢字 🦀"]
            let info = try await store.create(metadata: metadata)
            await #expect {
                _ = try await store.fork(info.id, atSeq: 0, newID: SessionID(unchecked: "No Spaces"))
            } throws: { ($0 as? CorralError)?.code == .invalidArgument }
            let lease = try await store.currentLease(info.id)
            let data: JSONValue = ["text": "a\u{0}b\u{1}\u{2028}\"\\", "n": .int(Int64.min), "d": .double(1e-300)]
            _ = try await store.append(
                info.id, [NewEvent(id: EventID(unchecked: "~!@#$%^&*()"), type: "ünï.type", data: data)], lease: lease)
            let events = try await store.all(info.id)
            #expect(events.count == 1 && events[0].data == data && events[0].type == "ünï.type")
            #expect(events[0].id.rawValue == "~!@#$%^&*()")
            #expect(try await store.session(info.id).metadata == metadata)
            #expect(try await store.list().count == 1)
        }
    }
}

@Suite("The PostgreSQL store: connecting, migrations, group commit")
struct PostgresStoreTests {
    static let enabled = StoreKind.all.contains(.postgres)

    @Test(
        "a wrong password gives one line naming the URL without the password",
        .enabled(if: enabled, Comment(rawValue: TestEnvironment.storeSkipReason)))
    func wrongPassword() async throws {
        guard var url = try testStoreURL() else { return }
        url.password = "wrong-secret-4711"
        await #expect {
            _ = try await PostgresSessionStore.connect(.init(url: url), logger: testLogger)
        } throws: { error in
            guard let error = error as? CorralError else { return false }
            return error.code == .permissionDenied && error.message.contains("postgres://\(url.user)@")
                && !"\(error) \(error.hint ?? "")".contains("wrong-secret-4711") && !error.message.contains("SELECT")
        }
    }

    @Test(
        "a database that is down at start gives one line naming the URL without the password",
        .enabled(if: enabled, Comment(rawValue: TestEnvironment.storeSkipReason)))
    func databaseDown() async throws {
        guard var url = try testStoreURL() else { return }
        url.password = "down-secret-4711"
        url.host = "127.0.0.1"
        url.port = try #require((40000..<40100).first { !TestEnvironment.tcpPortAccepts(port: $0) })
        await #expect {
            _ = try await PostgresSessionStore.connect(.init(url: url), logger: testLogger)
        } throws: { error in
            guard let error = error as? CorralError else { return false }
            return error.code == .unavailable && error.message.contains("postgres://\(url.user)@127.0.0.1:\(url.port)/")
                && !"\(error) \(error.hint ?? "")".contains("down-secret-4711") && error.hint != nil
        }
    }

    @Test(
        "URLs parse, and print without their password",
        arguments: [
            (
                "postgres://u:p%40ss@db.example:6543/app?sslmode=require",
                "postgres://u@db.example:6543/app?sslmode=require"
            ),
            ("postgresql://u@localhost/app?schema=s1", "postgres://u@localhost:5432/app?schema=s1"),
            ("postgres://u:pw@/app?host=/var/run/postgresql", "postgres://u@/app?host=/var/run/postgresql"),
        ])
    func urls(_ text: String, _ printed: String) throws {
        let url = try PostgresStoreURL(parsing: text)
        #expect(url.description == printed)
        #expect(!url.description.contains("pw") && !url.description.contains("p@ss"))
        #expect(PostgresStoreURL.redact("x postgres://u:secret@h/db y") == "x postgres://u@h/db y")
        #expect(throws: CorralError.self) { _ = try PostgresStoreURL(parsing: "mysql://u:secret@h/db") }
        do {
            _ = try PostgresStoreURL(parsing: "postgres://u:secret@h/db?schema=Bad-Name")
        } catch let error as CorralError {
            #expect(!error.message.contains("secret"))
        }
    }

    @Test(
        "migrations run once, in a table of their own; a newer schema is refused and nothing is written",
        .enabled(if: enabled, Comment(rawValue: TestEnvironment.storeSkipReason)))
    func migrations() async throws {
        guard let url = try testStoreURL() else { return }
        let store = try await PostgresSessionStore.connect(.init(url: url), logger: testLogger)
        let again = try await PostgresSessionStore.connect(.init(url: url), logger: testLogger)
        #expect(try await store.scalar("SELECT count(*)::int8 FROM schema_migrations") == Int64(PostgresSchema.latest))
        await again.shutdown()
        // A later corral migrated this database to version 999 and laid out its tables anew.
        try await store.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')")
        try await store.execute("DROP TABLE events")
        await #expect {
            _ = try await PostgresSessionStore.connect(.init(url: url), logger: testLogger)
        } throws: { error in
            guard let error = error as? CorralError else { return false }
            return error.code == .unsupported && error.message.contains("schema version 999")
                && error.message.contains("postgres://\(url.user)@")
                && error.hint?.contains("nothing was written") == true
        }
        #expect(
            try await store.scalar("SELECT count(*)::int8 FROM schema_migrations") == Int64(PostgresSchema.latest) + 1)
        #expect(try await store.scalar("SELECT CASE WHEN to_regclass('events') IS NULL THEN 1 ELSE 0 END::int8") == 1)
        try await store.dropSchema()
        await store.shutdown()
    }

    @Test(
        "concurrent appends share transactions: fewer commits than appends, each append answered once",
        .enabled(if: enabled, Comment(rawValue: TestEnvironment.storeSkipReason)))
    func groupCommit() async throws {
        guard let url = try testStoreURL() else { return }
        var configuration = PostgresSessionStore.Configuration(url: url)
        configuration.maxCommitters = 1
        let store = try await PostgresSessionStore.connect(configuration, logger: testLogger)
        let sessions = try await withThrowingTaskGroup(of: SessionID.self) { group in
            for _ in 0..<4 { group.addTask { try await store.create().id } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let before = store.commits
        let results = try await withThrowingTaskGroup(of: AppendResult.self) { group in
            for (index, id) in sessions.enumerated() {
                let lease = try await store.currentLease(id)
                for writer in 0..<16 {
                    group.addTask {
                        try await store.append(id, [event(id: "s\(index)-w\(writer)")], lease: lease)
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let commits = store.commits - before
        #expect(results.count == 64 && results.allSatisfy { $0.durable && $0.written == 1 })
        #expect(commits < 64, "64 concurrent appends took \(commits) transactions")
        for id in sessions {
            let events = try await store.all(id)
            #expect(events.map(\.seq) == Array(1...16) && Set(events.map(\.id)).count == 16)
        }
        try await store.dropSchema()
        await store.shutdown()
    }

    @Test(
        "a lone append tells the tails in its own transaction, a batch after it commits: a listener hears both",
        // Alone it takes under a second; beside the whole suite on two cores, over a minute.
        .enabled(if: enabled, Comment(rawValue: TestEnvironment.storeSkipReason)), .timeLimit(.minutes(10)))
    func notifications() async throws {
        guard let url = try testStoreURL() else { return }
        var configuration = PostgresSessionStore.Configuration(url: url)
        configuration.maxCommitters = 1
        let store = try await PostgresSessionStore.connect(configuration, logger: testLogger)
        let listener = try await store.connections.connect()
        let (heard, told) = AsyncStream<String>.makeStream()
        listener.addListener(channel: store.watcher.channel) { _, notification in told.yield(notification.payload) }
        // The LISTEN goes out ahead of this query on the same connection.
        let channels = try await listener.rows("SELECT pg_listening_channels()", logger: testLogger)
            .decode(String.self).gather()
        #expect(channels == [store.watcher.channel])
        let id = try await store.create().id
        let lease = try await store.currentLease(id)
        _ = try await store.append(id, [event(id: "lone")], lease: lease)
        let before = store.commits
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<16 {
                group.addTask { _ = try await store.append(id, [event(id: "w\(writer)")], lease: lease) }
            }
            try await group.waitForAll()
        }
        #expect(store.commits - before < 16, "16 concurrent appends were not batched")
        // A last notification on the watcher's own connection goes out after every one it
        // sent before, and after the lone append's, which committed before it returned: once
        // it is heard, so are they.
        _ = try await store.watcher.sendNotification(["end": 0]).get()
        var payloads: [String] = []
        for await payload in heard {
            if payload == "end 0" { break }
            payloads.append(payload)
        }
        #expect(payloads.contains("\(id) 1"), "the lone append told no tail: \(payloads)")
        #expect(payloads.contains("\(id) 17"), "the batch's last head was not told: \(payloads)")
        try? await listener.close()
        try await store.dropSchema()
        await store.shutdown()
    }
}
