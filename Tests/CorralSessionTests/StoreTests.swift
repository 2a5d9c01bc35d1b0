import CorralCore
import Foundation
import TestSupport
import Testing

@testable import CorralSession

@Suite("Appending, reading, retries and bad input, on every store")
struct StoreTests {
    @Test(
        "events read back in order, with seqs from 1, the lease's epoch and the store's time", arguments: StoreKind.all)
    func appendAndRead(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let info = try await store.create(metadata: ["owner": "ci"])
            #expect(info.head == 0 && info.epoch == 1 && info.metadata == ["owner": "ci"] && info.tenant == .local)
            let lease = try await store.currentLease(info.id)
            let before = Date()
            let first = try await store.append(
                info.id, [event(id: "a"), event("tool.intent", ["cmd": "ls"])], lease: lease)
            #expect(first.events.map(\.seq) == [1, 2] && first.written == 2 && first.head == 2 && first.durable)
            let second = try await store.append(
                info.id, [event("tool.result", ["ok": true])], expectedSeq: 3, lease: lease)
            #expect(second.firstSeq == 3)
            let events = try await store.all(info.id)
            #expect(events.map(\.seq) == [1, 2, 3])
            #expect(events.map(\.type) == ["user.message", "tool.intent", "tool.result"])
            #expect(events[0].id.rawValue == "a" && events[1].id.rawValue.hasPrefix("ev-"))
            #expect(
                events.allSatisfy { $0.epoch == 1 && $0.time >= before.addingTimeInterval(-0.001) && $0.time <= Date() }
            )
            #expect(events[1].data == ["cmd": "ls"])
            let page = try await store.readPage(info.id, from: 2, limit: 1)
            #expect(page.events.map(\.seq) == [2] && page.next == 3 && page.hasMore)
            #expect(try await store.readPage(info.id, from: 4).events.isEmpty)
            #expect(try await store.session(info.id).head == 3)
        }
    }

    @Test("a retried append with the same ids at the same seqs succeeds and writes nothing", arguments: StoreKind.all)
    func idempotentRetry(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let id = try await store.create().id
            let lease = try await store.currentLease(id)
            let batch = [event(id: "x1"), event(id: "x2"), event(id: "x3")]
            _ = try await store.append(id, batch, expectedSeq: 1, lease: lease)
            let size = try await storedSize(store, id)
            let retried = try await store.append(id, batch, expectedSeq: 1, lease: lease)
            #expect(retried.written == 0 && retried.events.map(\.seq) == [1, 2, 3] && retried.head == 3)
            // Without expectedSeq, a retry of the latest append is recognised by its ids too.
            let again = try await store.append(id, batch, lease: lease)
            #expect(again.written == 0 && again.events.map(\.seq) == [1, 2, 3])
            #expect(try await storedSize(store, id) == size)
            #expect(try await store.session(id).head == 3)
            // A batch cut short by a crash: the part that landed is skipped, the rest written.
            let longer = batch + [event(id: "x4")]
            let resumed = try await store.append(id, longer, expectedSeq: 1, lease: lease)
            #expect(resumed.written == 1 && resumed.events.map(\.seq) == [1, 2, 3, 4])
            #expect(try await store.all(id).map(\.id.rawValue) == ["x1", "x2", "x3", "x4"])
        }
    }

    @Test("an expectedSeq that does not match the head is refused and writes nothing", arguments: StoreKind.all)
    func expectedSeqMismatch(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let id = try await store.create().id
            let lease = try await store.currentLease(id)
            _ = try await store.append(id, [event(id: "a"), event(id: "b")], lease: lease)
            for (expected, events) in [
                (UInt64(2), [event(id: "c")]), (5, [event()]), (0, [event()]), (1, [event(id: "a"), event(id: "z")]),
            ] {
                await #expect {
                    _ = try await store.append(id, events, expectedSeq: expected, lease: lease)
                } throws: { error in
                    let error = error as? CorralError
                    return error?.code == .conflict && error?.message.contains("head is 2") == true
                }
            }
            #expect(try await store.session(id).head == 2)
        }
    }

    @Test("bad input gets a clear error and nothing is written", arguments: StoreKind.all)
    func badInput(_ kind: StoreKind) async throws {
        try await withStore(kind, maxEventBytes: 1024) { store, _ in
            let id = try await store.create().id
            let lease = try await store.currentLease(id)
            _ = try await store.append(id, [event()], lease: lease)
            let size = try await storedSize(store, id)

            func refused(_ code: CorralError.Code, _ text: String, _ body: () async throws -> Void) async {
                await #expect {
                    try await body()
                } throws: { error in
                    let error = error as? CorralError
                    return error?.code == code && error?.message.contains(text) == true && error?.hint != nil
                }
            }
            await refused(.notFound, "no session se-missing") {
                _ = try await store.append(
                    SessionID(unchecked: "se-missing"), [event()],
                    lease: Lease(session: SessionID(unchecked: "se-missing"), epoch: 1))
            }
            if let store = store as? FileSessionStore {
                #expect(
                    !FileManager.default.fileExists(atPath: store.directory.appendingPathComponent("se-missing").path))
            }
            #expect(try await store.list().map(\.id) == [id])
            await refused(.notFound, "no session") { _ = try await store.readPage(SessionID(unchecked: "se-missing")) }
            await refused(.notFound, "no session") { _ = try await store.wake(SessionID(unchecked: "se-missing")) }
            await refused(.invalidArgument, "invalid session id") { _ = try SessionID(validating: "../etc") }
            await refused(.invalidArgument, "invalid session id") { _ = try SessionID(validating: "a/b") }
            await refused(.resourceExhausted, "over the event limit of 1k") {
                _ = try await store.append(
                    id, [event(), event("big", .string(String(repeating: "x", count: 2000)))], lease: lease)
            }
            await refused(.invalidArgument, "JSON cannot represent") {
                _ = try await store.append(id, [event("n", ["x": .double(.nan)])], lease: lease)
            }
            await refused(.invalidArgument, "invalid type") {
                _ = try await store.append(id, [event("")], lease: lease)
            }
            await refused(.invalidArgument, "has no events") { _ = try await store.append(id, [], lease: lease) }
            await refused(.alreadyExists, "already exists") { _ = try await store.create(id: id) }
            await refused(.alreadyExists, "already exists") { _ = try await store.fork(id, atSeq: 1, newID: id) }
            await refused(.invalidArgument, "cannot fork") { _ = try await store.fork(id, atSeq: 2) }
            await refused(.invalidArgument, "invalid metadata key") {
                _ = try await store.create(metadata: ["bad\u{1}key": "x"])
            }
            await refused(.conflict, "is stale") {
                _ = try await store.append(id, [event()], lease: Lease(session: id, epoch: 0))
            }
            #expect(try await storedSize(store, id) == size)
            #expect(try await store.session(id).head == 1)
        }
    }

    @Test("sessions list with their heads, epochs and fork origins", arguments: StoreKind.all)
    func listing(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            #expect(try await store.list().isEmpty)
            let a = try await store.create(id: SessionID(unchecked: "a"), tenant: TenantID(unchecked: "acme")).id
            let lease = try await store.currentLease(a)
            _ = try await store.append(a, [event(), event(), event()], lease: lease)
            _ = try await store.wake(a)
            let b = try await store.fork(a, atSeq: 2, newID: SessionID(unchecked: "b"))
            let listed = try await store.list()
            #expect(listed.map(\.id.rawValue) == ["a", "b"])
            #expect(listed[0].head == 3 && listed[0].epoch == 2 && listed[0].tenant.rawValue == "acme")
            #expect(listed[1].head == 2 && listed[1].forkedFrom == ForkOrigin(session: a, seq: 2) && b.epoch == 2)
        }
    }

    @Test("a subscriber sees the history, then each new event as it is appended", arguments: StoreKind.all)
    func subscribe(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let id = try await store.create().id
            let lease = try await store.currentLease(id)
            _ = try await store.append(id, [event(id: "old")], lease: lease)
            let subscriber = Task {
                var seen: [String] = []
                for try await event in store.subscribe(id) {
                    seen.append(event.id.rawValue)
                    if seen.count == 4 { break }
                }
                return seen
            }
            for name in ["n1", "n2", "n3"] {
                _ = try await store.append(id, [event(id: name)], lease: lease, durability: .none)
            }
            #expect(try await subscriber.value == ["old", "n1", "n2", "n3"])
        }
    }

    @Test(
        "a subscriber sees appends made through another store instance on the same space, as from another process",
        arguments: StoreKind.all)
    func subscribeAcrossInstances(_ kind: StoreKind) async throws {
        try await withStore(kind, segmentBytes: 2048) { reader, fixture in
            let writer = try await fixture.open()
            let id = try await writer.create().id
            let lease = try await writer.currentLease(id)
            let subscriber = Task {
                var seqs: [UInt64] = []
                for try await event in reader.subscribe(id) {
                    seqs.append(event.seq)
                    if seqs.count == 60 { break }
                }
                return seqs
            }
            // Once the subscriber waits for the head to move, only the directory watch (or
            // LISTEN) can tell it that another instance appended: nothing in this one changes.
            if let reader = reader as? FileSessionStore {
                let handle = try await reader.handle(id)
                while handle.view.withLock({ $0.waiters.isEmpty }) { await Task.yield() }
            } else {
                try await Task.sleep(for: .milliseconds(200))
            }
            for seq in 1...60 {
                _ = try await writer.append(
                    id, [event(id: "e\(seq)", ["pad": .string(String(repeating: "p", count: 100))])], lease: lease,
                    durability: .none)
            }
            #expect(try await subscriber.value == Array(1...60))
            await writer.close()
        }
    }

    @Test("cancelling a subscriber ends its sequence", arguments: StoreKind.all)
    func cancelSubscriber(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let id = try await store.create().id
            let subscriber = Task {
                var count = 0
                for try await _ in store.subscribe(id) { count += 1 }
                return count
            }
            subscriber.cancel()
            #expect(try await subscriber.value == 0)
        }
    }

    @Test("group commit and no-fsync appends become durable on sync", arguments: StoreKind.all)
    func durabilityModes(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let id = try await store.create().id
            let lease = try await store.currentLease(id)
            let grouped = try await store.append(
                id, [event()], lease: lease, durability: .groupCommit(maxDelay: .milliseconds(2)))
            #expect(!grouped.durable)
            let none = try await store.append(id, [event()], lease: lease, durability: .none)
            #expect(!none.durable)
            try await store.sync(id)
            if let store = store as? FileSessionStore {
                let handle = try await store.handle(id)
                #expect(handle.syncState.withLock { $0.durable } == 2)
            }
            #expect(try await store.all(id).count == 2)
        }
    }
}
