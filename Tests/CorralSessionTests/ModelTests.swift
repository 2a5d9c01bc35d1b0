import CorralCore
import Foundation
import TestSupport
import Testing

@testable import CorralSession

/// Random sequences of operations against the store and against a plain in-memory model of
/// what it should hold; after every step the two must agree. Segments are small, so rolls,
/// sealed segments and index lookups are all exercised; the store is reopened from disk now
/// and then, so that nothing is only right in memory.
@Suite("Every store against an in-memory model")
struct ModelTests {
    /// Small enough that every seed's run rolls at least one session over three segments.
    static let segmentBytes: UInt64 = 1000

    struct ModelEvent: Equatable {
        var id: String
        var type: String
        var data: JSONValue
        var epoch: UInt64
    }

    struct ModelSession {
        var events: [ModelEvent] = []
        var epoch: UInt64 = 1
        var forkedFrom: ForkOrigin?
        /// The last batch appended, with the seq it started at, for retries.
        var lastBatch: (seq: UInt64, events: [NewEvent])?
    }

    @Test(
        "append, read, fork and wake agree with the model",
        arguments: StoreKind.all, [1, 2, 3, 4, 5, 6] as [UInt64])
    func randomOperations(_ kind: StoreKind, seed: UInt64) async throws {
        try await withStore(kind, segmentBytes: Self.segmentBytes) { first, fixture in
            var generator = SeededGenerator(seed: seed)
            var store = first
            var opened: [any SessionStore] = []
            var model: [SessionID: ModelSession] = [:]
            var nextID = 0
            // Sessions in the order they were made: their ids are random, so choosing among
            // sorted ids would make a seed's run differ from one test run to the next.
            var order: [SessionID] = []

            func check(_ id: SessionID, _ session: ModelSession, step: Int) async throws {
                let info = try await store.session(id)
                #expect(info.head == UInt64(session.events.count), "seed \(seed) step \(step): head")
                #expect(info.epoch == session.epoch, "seed \(seed) step \(step): epoch")
                #expect(info.forkedFrom == session.forkedFrom)
            }

            for step in 0..<250 {
                let ids = order
                let roll = Int.random(in: 0..<100, using: &generator)
                if ids.isEmpty || roll < 5 {
                    let info = try await store.create()
                    model[info.id] = ModelSession()
                    order.append(info.id)
                    continue
                }
                let id = ids.randomElement(using: &generator) ?? ids[0]
                guard var session = model[id] else { continue }
                let lease = Lease(session: id, epoch: session.epoch)
                switch roll {
                case 5..<55:
                    let count = Int.random(in: 1...6, using: &generator)
                    let batch = (0..<count).map { _ -> NewEvent in
                        nextID += 1
                        let callerID = Bool.random(using: &generator)
                        return NewEvent(
                            id: callerID ? EventID(unchecked: "m\(nextID)") : nil,
                            type: "t\(Int.random(in: 0..<4, using: &generator))",
                            data: randomJSON(using: &generator))
                    }
                    let head = UInt64(session.events.count)
                    let expected: UInt64? = Bool.random(using: &generator) ? head + 1 : nil
                    let durability: Durability =
                        [.none, .fsync, .groupCommit(maxDelay: .milliseconds(1))].randomElement(using: &generator)
                        ?? .none
                    let result = try await store.append(
                        id, batch, expectedSeq: expected, lease: lease, durability: durability)
                    #expect(result.firstSeq == head + 1 && result.written == count, "seed \(seed) step \(step)")
                    for (offset, new) in batch.enumerated() {
                        #expect(result.events[offset].seq == head + 1 + UInt64(offset))
                        session.events.append(
                            ModelEvent(
                                id: result.events[offset].id.rawValue, type: new.type, data: new.data,
                                epoch: session.epoch))
                    }
                    session.lastBatch = batch.allSatisfy { $0.id != nil } ? (head + 1, batch) : nil
                case 55..<62:
                    // A retry of the last batch (ids given) writes nothing; one with a stale
                    // expectedSeq and new ids is refused.
                    if let (seq, batch) = session.lastBatch {
                        let retried = try await store.append(id, batch, expectedSeq: seq, lease: lease)
                        #expect(retried.written == 0 && retried.firstSeq == seq, "seed \(seed) step \(step): retry")
                    }
                    if session.events.count > 0 {
                        await #expect(throws: CorralError.self) {
                            _ = try await store.append(
                                id, [NewEvent(type: "late")], expectedSeq: UInt64(session.events.count), lease: lease)
                        }
                    }
                case 62..<82:
                    let head = session.events.count
                    let from = UInt64(Int.random(in: 0...(head + 2), using: &generator))
                    let limit = Int.random(in: 1...40, using: &generator)
                    let page = try await store.readPage(id, from: from, limit: limit)
                    let start = Int(max(from, 1)) - 1
                    let expected = start < head ? Array(session.events[start..<min(head, start + limit)]) : []
                    let got = page.events.map {
                        ModelEvent(id: $0.id.rawValue, type: $0.type, data: $0.data, epoch: $0.epoch)
                    }
                    #expect(got == expected, "seed \(seed) step \(step): page from \(from) limit \(limit)")
                    #expect(page.events.map(\.seq) == Array(UInt64(start + 1)..<UInt64(start + 1 + expected.count)))
                case 82..<88:
                    let at = UInt64(Int.random(in: 0...session.events.count, using: &generator))
                    let fork = try await store.fork(id, atSeq: at)
                    var copy = ModelSession()
                    copy.events = Array(session.events.prefix(Int(at)))
                    copy.epoch = session.epoch
                    copy.forkedFrom = ForkOrigin(session: id, seq: at)
                    model[fork.id] = copy
                    order.append(fork.id)
                case 88..<94:
                    let woken = try await store.wake(id)
                    #expect(woken.epoch == session.epoch + 1)
                    session.epoch = woken.epoch
                    await #expect {
                        _ = try await store.append(id, [NewEvent(type: "zombie")], lease: lease)
                    } throws: { ($0 as? CorralError)?.code == .conflict }
                case 94..<97:
                    store = try await fixture.open()
                    opened.append(store)
                default:
                    try await check(id, session, step: step)
                }
                model[id] = session
            }
            store = try await fixture.open()
            opened.append(store)
            if let store = store as? FileSessionStore {
                let segmentCounts = try model.keys.map { id in
                    try sessionFiles(store, id).filter { $0.hasSuffix(".seg") }.count
                }
                #expect(
                    segmentCounts.contains { $0 >= 3 },
                    "seed \(seed): the run never rolled a session over three segments: \(segmentCounts.sorted())")
            }
            #expect(try await store.list().map(\.id) == model.keys.sorted())
            for (id, session) in model {
                try await check(id, session, step: -1)
                let events = try await store.all(id)
                #expect(
                    events.map { ModelEvent(id: $0.id.rawValue, type: $0.type, data: $0.data, epoch: $0.epoch) }
                        == session.events)
                #expect(events.map(\.seq) == Array(1...UInt64(max(events.count, 1))).prefix(events.count).map { $0 })
            }
            for other in opened { await other.close() }
        }
    }
}
