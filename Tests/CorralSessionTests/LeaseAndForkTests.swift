import CorralCore
import Foundation
import TestSupport
import Testing

@testable import CorralSession

@Suite("Leases fence zombies; forks share history and then go their own way, on every store")
struct LeaseAndForkTests {
    @Test("after a wake, appends under the older lease are refused and write nothing", arguments: StoreKind.all)
    func zombieRefused(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let id = try await store.create().id
            let zombie = try await store.currentLease(id)
            _ = try await store.append(id, [event()], lease: zombie)
            let fresh = try await store.wake(id)
            #expect(fresh.epoch == zombie.epoch + 1)
            await #expect {
                _ = try await store.append(id, [event("late")], lease: zombie)
            } throws: { error in
                let error = error as? CorralError
                return error?.code == .conflict && error?.message.contains("is stale") == true
                    && error?.message.contains("woken at epoch \(fresh.epoch)") == true
            }
            let written = try await store.append(id, [event("fresh")], lease: fresh)
            #expect(written.firstSeq == 2)
            #expect(try await store.all(id).map(\.epoch) == [1, 2])
            await #expect(throws: CorralError.self) {
                _ = try await store.append(id, [event()], lease: Lease(session: id, epoch: 9))
            }
        }
    }

    @Test("a wake in another process fences a writer that already had the session open", arguments: StoreKind.all)
    func zombieAcrossProcesses(_ kind: StoreKind) async throws {
        try await withStore(kind) { harness, fixture in
            let id = try await harness.create().id
            let lease = try await harness.currentLease(id)
            _ = try await harness.append(id, [event()], lease: lease)
            // A second instance shares nothing in memory with the first: only the files (or
            // the database).
            let replacement = try await fixture.open()
            let newLease = try await replacement.wake(id)
            await #expect {
                _ = try await harness.append(id, [event("zombie")], lease: lease)
            } throws: { ($0 as? CorralError)?.code == .conflict }
            _ = try await replacement.append(id, [event("new")], lease: newLease)
            #expect(try await harness.all(id).map(\.type) == ["user.message", "new"])
            // The lease is durable: a store opened afterwards sees the new epoch.
            let later = try await fixture.open()
            #expect(try await later.session(id).epoch == newLease.epoch)
            await later.close()
            await replacement.close()
        }
    }

    @Test(
        "a fork holds its parent's events up to the fork point; later appends to either stay apart",
        arguments: StoreKind.all)
    func forkIndependence(_ kind: StoreKind) async throws {
        // Small segments: the fork links whole sealed segments and copies part of one.
        try await withStore(kind, segmentBytes: 1024) { store, fixture in
            let parent = try await store.create().id
            let lease = try await store.currentLease(parent)
            for index in 0..<60 {
                _ = try await store.append(parent, [event(id: "p\(index)")], lease: lease, durability: .none)
            }
            let history = try await store.all(parent)
            for at in [UInt64(0), 1, 17, 59, 60] {
                let fork = try await store.fork(parent, atSeq: at)
                #expect(fork.head == at && fork.forkedFrom == ForkOrigin(session: parent, seq: at))
                #expect(try await store.all(fork.id) == Array(history.prefix(Int(at))))
                let forkLease = try await store.currentLease(fork.id)
                for index in 0..<30 {
                    _ = try await store.append(
                        fork.id, [event(id: "f\(at)-\(index)")], lease: forkLease, durability: .none)
                }
                #expect(
                    try await store.all(fork.id).map(\.id.rawValue) == history.prefix(Int(at)).map(\.id.rawValue)
                        + (0..<30).map { "f\(at)-\($0)" })
                if at == 59, let store = store as? FileSessionStore {
                    // Sealed segments are shared, not copied.
                    let shared = try sessionFiles(store, fork.id).filter { $0.hasSuffix(".seg") }.filter { name in
                        let attributes = try FileManager.default.attributesOfItem(
                            atPath: sessionPath(store, fork.id, name))
                        return (attributes[.referenceCount] as? Int ?? 1) > 1
                    }
                    #expect(shared.count >= 2)
                }
            }
            _ = try await store.append(parent, [event(id: "p60")], lease: lease)
            let reopened = try await fixture.open()
            #expect(try await reopened.all(parent).map(\.id.rawValue) == (0...60).map { "p\($0)" })
            await reopened.close()
            await #expect {
                _ = try await store.fork(parent, atSeq: 62)
            } throws: { ($0 as? CorralError)?.code == .invalidArgument }
        }
    }
}

@Suite("Many sessions, many tasks, on every store")
struct ConcurrencyTests {
    @Test(
        "two writers with separate store instances, as two processes, take turns on one session without losing or repeating a seq",
        arguments: StoreKind.all
    )
    func writersInTurn(_ kind: StoreKind) async throws {
        try await withStore(kind, segmentBytes: 2048) { first, fixture in
            let second = try await fixture.open()
            let id = try await first.create().id
            let lease = try await first.currentLease(id)
            var expected: [String] = []
            for round in 0..<120 {
                let store = round % 3 == 0 ? second : first
                // Reading first lets the writer's view move on through the other's appends
                // and segment rolls, so the append itself finds nothing new to read.
                if round % 2 == 0 { _ = try await store.session(id) }
                let batch = (0..<(round % 4 + 1)).map {
                    event(id: "r\(round)-\($0)", ["pad": .string(String(repeating: "q", count: round % 50))])
                }
                let result = try await store.append(
                    id, batch, lease: lease, durability: round % 5 == 0 ? .fsync : .none)
                #expect(result.firstSeq == UInt64(expected.count) + 1, "round \(round)")
                expected += batch.compactMap { $0.id?.rawValue }
            }
            let third = try await fixture.open()
            for store in [first, second, third] {
                #expect(try await store.all(id).map(\.id.rawValue) == expected)
            }
            if let first = first as? FileSessionStore {
                #expect(try sessionFiles(first, id).filter { $0.hasSuffix(".seg") }.count > 3)
            }
            await second.close()
            await third.close()
        }
    }

    @Test(
        "concurrent appends to many sessions from many tasks land exactly once, in seq order, while readers read",
        arguments: StoreKind.all)
    func manyWriters(_ kind: StoreKind) async throws {
        try await withStore(kind, segmentBytes: 16 * 1024) { store, _ in
            let sessions = try await withThrowingTaskGroup(of: SessionID.self) { group in
                for _ in 0..<16 { group.addTask { try await store.create().id } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let writersPerSession = 4
            let batches = 25
            try await withThrowingTaskGroup(of: Void.self) { group in
                for id in sessions {
                    let lease = try await store.currentLease(id)
                    for writer in 0..<writersPerSession {
                        group.addTask {
                            for batch in 0..<batches {
                                let durability: Durability =
                                    batch % 5 == 0 ? .fsync : .groupCommit(maxDelay: .milliseconds(1))
                                _ = try await store.append(
                                    id, [event(id: "w\(writer)-b\(batch)-0"), event(id: "w\(writer)-b\(batch)-1")],
                                    lease: lease,
                                    durability: durability)
                            }
                        }
                    }
                    group.addTask {
                        // A reader during the writes: every page it gets is a gap-free run.
                        for _ in 0..<20 {
                            let page = try await store.readPage(id, from: 1, limit: 1000)
                            #expect(
                                page.events.map(\.seq)
                                    == Array(1...UInt64(max(page.events.count, 1))).prefix(page.events.count).map { $0 }
                            )
                        }
                    }
                }
                try await group.waitForAll()
            }
            for id in sessions {
                try await store.sync(id)
                let events = try await store.all(id)
                #expect(events.count == writersPerSession * batches * 2)
                #expect(events.map(\.seq) == Array(1...UInt64(events.count)))
                #expect(Set(events.map(\.id)).count == events.count)
                // Each writer's batches keep their order and stay together.
                for writer in 0..<writersPerSession {
                    let mine = events.filter { $0.id.rawValue.hasPrefix("w\(writer)-") }.map(\.id.rawValue)
                    #expect(mine == (0..<batches).flatMap { ["w\(writer)-b\($0)-0", "w\(writer)-b\($0)-1"] })
                }
            }
        }
    }
}
