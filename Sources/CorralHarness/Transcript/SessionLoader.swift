import CorralCore
import CorralSession

/// Builds a `SessionState` from the log without reading all of it: it reads backwards a page
/// at a time to the latest `context.compacted` event, whose snapshot holds the counters and
/// sandboxes, then forwards from the first event that compaction kept. A session with no
/// compaction is read from the start, which its context had to hold anyway.
struct SessionLoader {
    let store: any SessionStore
    let session: SessionID
    static let pageSize = 512

    func load() async throws -> SessionState {
        let info = try await store.session(session)
        var state = SessionState()
        guard info.head > 0 else { return state }
        // The spec is the first event of an agent session.
        let first = try await store.readPage(session, from: 1, limit: 1)
        if let created = first.events.first, created.type == HarnessEvent.sessionCreated {
            state.spec = created.data["agent"].flatMap(AgentSpec.init(json:))
        }

        // Backwards to the latest compaction.
        var loaded: [[Event]] = []
        var end = info.head
        var boundary: Event?
        while end >= 1 {
            let start = end > UInt64(Self.pageSize) ? end - UInt64(Self.pageSize) + 1 : 1
            let events = try await readRange(from: start, through: end)
            loaded.insert(events, at: 0)
            if let compaction = events.last(where: { $0.type == HarnessEvent.contextCompacted }) {
                boundary = compaction
                break
            }
            end = start - 1
        }
        var tail = loaded.flatMap { $0 }

        guard let boundary else {
            for event in tail { state.apply(event) }
            return state
        }
        let keepFrom = boundary.data["keepFrom"]?.intValue.map { UInt64($0) } ?? boundary.seq
        if let firstLoaded = tail.first?.seq, keepFrom < firstLoaded {
            tail = try await readRange(from: keepFrom, through: firstLoaded - 1) + tail
        }
        state.restore(boundary.data["snapshot"] ?? [:])
        state.context.reset(summary: state.summaryMessage(boundary.data, seq: boundary.seq), seq: boundary.seq)
        for event in tail
        where event.seq >= keepFrom && event.seq < boundary.seq && event.type != HarnessEvent.contextCompacted {
            state.applyToContext(event)
        }
        state.head = boundary.seq
        for event in tail where event.seq > boundary.seq { state.apply(event) }
        return state
    }

    /// Events `from...through`, however many pages that takes.
    func readRange(from: UInt64, through: UInt64) async throws -> [Event] {
        var events: [Event] = []
        var next = from
        while next <= through {
            let page = try await store.readPage(session, from: next, limit: Int(min(through - next + 1, 4096)))
            guard !page.events.isEmpty else { break }
            events += page.events.prefix { $0.seq <= through }
            next = page.next
        }
        return events
    }
}
