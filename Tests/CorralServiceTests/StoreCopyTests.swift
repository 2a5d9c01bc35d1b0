import CorralCore
import CorralService
import CorralSession
import CorralSessionPostgres
import Foundation
import Logging
import TestSupport
import Testing

/// `corral store copy` between real stores: files to PostgreSQL and back, files to files.
@Suite("Copying stores")
struct StoreCopyTests {
    static let logger: Logger = {
        var logger = Logger(label: "corral.test")
        logger.logLevel = .warning
        return logger
    }()

    /// A state directory with sessions of two tenants, woken (events of two epochs), a fork,
    /// and the two lists.
    static func fill(_ state: URL) async throws -> [SessionID] {
        let store = FileSessionStore(directory: state.appendingPathComponent("sessions"))
        var ids: [SessionID] = []
        for (index, tenant) in ["local", "acme", "acme"].enumerated() {
            let info = try await store.create(
                id: nil, tenant: TenantID(unchecked: tenant), metadata: ["kind": "test", "n": "\(index)"])
            var lease = try await store.currentLease(info.id)
            for round in 0..<3 {
                let events = (0..<(200 * (index + 1))).map {
                    NewEvent(type: "step.\(round)", data: ["i": .int(Int64($0)), "x": .double(1.5), "s": "é\u{1}"])
                }
                _ = try await store.append(info.id, events, lease: lease)
                lease = try await store.wake(info.id)
            }
            ids.append(info.id)
        }
        ids.append(try await store.fork(ids[0], atSeq: 150).id)
        let tenants: any RecordList<JSONValue> = SessionStoreSelection.recordList(
            "tenants", what: "tenants file", store: store, stateDirectory: state)
        try await tenants.modify {
            $0.append(["id": "acme", "tokenSHA256": "ab", "created": "2026-12-07T08:00:00Z", "groups": ["vpc"]])
        }
        let tokens: any RecordList<JSONValue> = SessionStoreSelection.recordList(
            "worker-tokens", what: "worker tokens file", store: store, stateDirectory: state)
        try await tokens.modify {
            $0.append(["id": "wt-1", "group": "vpc", "tokenSHA256": "cd", "created": "2026-12-07T08:00:00Z"])
        }
        return ids
    }

    static func events(_ id: SessionID, in store: any SessionStore) async throws -> [Event] {
        var events: [Event] = []
        for try await event in store.read(id) { events.append(event) }
        return events
    }

    @Test("files to files: every session, event and list entry arrives; run again, nothing is copied twice")
    func filesToFiles() async throws {
        try await withTemporaryDirectory { root in
            let (source, target) = (root.appendingPathComponent("a"), root.appendingPathComponent("b"))
            let ids = try await Self.fill(source)
            let report = try await StoreCopy.run(from: .files(source), to: .files(target), logger: Self.logger)
            #expect(report.sessions == 4 && report.tenants == 1 && report.workerTokens == 1 && report.verified)
            #expect(report.events == 600 + 1200 + 1800 + 150)
            let (from, to) = (
                FileSessionStore(directory: source.appendingPathComponent("sessions")),
                FileSessionStore(directory: target.appendingPathComponent("sessions"))
            )
            for id in ids {
                #expect(try await Self.events(id, in: from) == Self.events(id, in: to))
                let (one, other) = (try await from.session(id), try await to.session(id))
                #expect(one.epoch == other.epoch && one.forkedFrom == other.forkedFrom && one.created == other.created)
            }
            let again = try await StoreCopy.run(from: .files(source), to: .files(target), logger: Self.logger)
            #expect(again.alreadyThere == 4 && again.verified)
            #expect(try await to.list().count == 4)
        }
    }

    @Test(
        "files to PostgreSQL and back: the same events, times and epochs; an interrupted copy is finished; another session under the same id is refused",
        .enabled(if: TestEnvironment.shouldRunStoreTests, Comment(rawValue: TestEnvironment.storeSkipReason)))
    func throughPostgres() async throws {
        guard let url = TestEnvironment.freshStoreURL() else { return }
        try await withSchema(url, logger: Self.logger) { database in
            try await withTemporaryDirectory { root in
                let (source, back) = (root.appendingPathComponent("a"), root.appendingPathComponent("b"))
                let ids = try await Self.fill(source)
                let from = FileSessionStore(directory: source.appendingPathComponent("sessions"))

                // Interrupted after the first page of one session: the next copy finishes it.
                let first = try await from.session(ids[2])
                try await database.importSession(first)
                try await database.importEvents(ids[2], try await from.readPage(ids[2], from: 1, limit: 300).events)

                let report = try await StoreCopy.run(from: .files(source), to: .postgres(url), logger: Self.logger)
                #expect(report.sessions == 4 && report.verified && report.alreadyThere == 0)
                for id in ids {
                    #expect(try await Self.events(id, in: from) == Self.events(id, in: database))
                    #expect(try await from.session(id).epoch == database.session(id).epoch)
                }
                let tenants = try await database.recordList("tenants", of: JSONValue.self).load()
                #expect(tenants.first?["groups"] == ["vpc"])

                let home = try await StoreCopy.run(from: .postgres(url), to: .files(back), logger: Self.logger)
                #expect(home.sessions == 4 && home.verified)
                let returned = FileSessionStore(directory: back.appendingPathComponent("sessions"))
                for id in ids { #expect(try await Self.events(id, in: from) == Self.events(id, in: returned)) }

                // Appends after the copy go on from the copied epoch.
                let lease = try await database.wake(ids[0])
                _ = try await database.append(ids[0], [NewEvent(type: "after.copy")], lease: lease)

                // Another session under a copied id: refused, naming it.
                let other = try await FileSessionStore(directory: root.appendingPathComponent("c/sessions"))
                    .create(id: ids[1], tenant: .local, metadata: [:])
                #expect(other.id == ids[1])
                let refused = await #expect(throws: CorralError.self) {
                    try await StoreCopy.run(
                        from: .files(root.appendingPathComponent("c")), to: .postgres(url), logger: Self.logger)
                }
                #expect(refused?.code == .alreadyExists && refused?.message.contains(ids[1].rawValue) == true)
            }
        }
    }

    @Test("bad locations: a bare path, the same store twice, a source that is not there, a password in an error")
    func badLocations() async throws {
        #expect(throws: CorralError.self) { try StoreCopy.Location(parsing: "/var/lib/corral") }
        let secret = #expect(throws: CorralError.self) { try StoreCopy.Location(parsing: "mysql://u:hunter2@h/db") }
        #expect(secret?.message.contains("hunter2") == false, "\(String(describing: secret))")
        try await withTemporaryDirectory { root in
            let same = await #expect(throws: CorralError.self) {
                try await StoreCopy.run(from: .files(root), to: .files(root), logger: Self.logger)
            }
            #expect(same?.message.contains("same store") == true)
            let missing = await #expect(throws: CorralError.self) {
                try await StoreCopy.run(
                    from: .files(root.appendingPathComponent("nope")), to: .files(root), logger: Self.logger)
            }
            #expect(missing?.code == .notFound)
        }
    }
}
