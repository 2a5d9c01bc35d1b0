import CorralCore

/// Where sessions live: append-only event logs, one per session, with fencing by lease.
///
/// Sequence numbers start at 1 and have no gaps; a session's head is the seq of its last
/// event (0 while empty). `expectedSeq` is the seq the first event of an append must get,
/// that is head + 1; an append whose `expectedSeq` does not match is refused with
/// `.conflict`, unless it is a retry of events already stored at those positions (same ids),
/// which succeeds and writes nothing.
///
/// Every method throws `CorralError`: `.notFound` for an unknown session, `.invalidArgument`
/// for bad input, `.conflict` for a stale lease or a wrong `expectedSeq`, `.corrupted` for
/// damaged files, `.io` when the file system fails (a full disk included),
/// `.resourceExhausted` for an event over the size limit.
public protocol SessionStore: Sendable {
    /// Makes an empty session at epoch 1. A given id that exists already is refused.
    func create(id: SessionID?, tenant: TenantID, metadata: [String: String]) async throws -> SessionInfo

    /// Appends events in order under `lease`. Nothing of a refused append is written.
    func append(
        _ session: SessionID, _ events: [NewEvent], expectedSeq: UInt64?, lease: Lease, durability: Durability
    ) async throws -> AppendResult

    /// Events from seq `from` on, at most `limit` of them (a page size the store picks when
    /// nil). An empty page when `from` is past the head.
    func readPage(_ session: SessionID, from: UInt64, limit: Int?) async throws -> EventPage

    func session(_ id: SessionID) async throws -> SessionInfo

    func list() async throws -> [SessionInfo]

    /// A new lease with the next epoch, made durable before it is returned. Every append
    /// under an older lease is refused from then on.
    func wake(_ id: SessionID) async throws -> Lease

    /// The lease of the current epoch, for a writer that does not take over the session (the
    /// command line's `append`). It goes stale at the next wake like any other.
    func currentLease(_ id: SessionID) async throws -> Lease

    /// A new session whose events 1...`atSeq` are those of `id`. The two are independent
    /// from then on.
    func fork(_ id: SessionID, atSeq: UInt64, newID: SessionID?) async throws -> SessionInfo

    /// Removes a session and all its events, for good (a tenant being purged). `.notFound`
    /// when there is none. A session is never shortened or rewritten: it exists whole, or not
    /// at all.
    func delete(_ id: SessionID) async throws

    /// Waits until every event appended so far is on disk.
    func sync(_ id: SessionID) async throws

    /// Returns the head as soon as it is beyond `seq`: at once if it already is, else when an
    /// append (from this process or another) moves it.
    func waitForHead(_ id: SessionID, beyond seq: UInt64) async throws -> UInt64
}

extension SessionStore {
    public func create(id: SessionID? = nil, tenant: TenantID = .local, metadata: [String: String] = [:]) async throws
        -> SessionInfo
    {
        try await create(id: id, tenant: tenant, metadata: metadata)
    }

    public func append(
        _ session: SessionID, _ events: [NewEvent], expectedSeq: UInt64? = nil, lease: Lease,
        durability: Durability = .fsync
    ) async throws -> AppendResult {
        try await append(session, events, expectedSeq: expectedSeq, lease: lease, durability: durability)
    }

    public func readPage(_ session: SessionID, from: UInt64 = 1, limit: Int? = nil) async throws -> EventPage {
        try await readPage(session, from: from, limit: limit)
    }

    public func fork(_ id: SessionID, atSeq: UInt64, newID: SessionID? = nil) async throws -> SessionInfo {
        try await fork(id, atSeq: atSeq, newID: newID)
    }

    /// Events from `from` up to the head as it is when the sequence reaches it (or `limit`
    /// events), read a page at a time.
    public func read(_ session: SessionID, from: UInt64 = 1, limit: Int? = nil) -> SessionEvents {
        SessionEvents(store: self, session: session, from: from, limit: limit)
    }

    /// A live tail: the events from `from` on, then each new one as it is appended, until the
    /// consuming task is cancelled.
    public func subscribe(_ session: SessionID, from: UInt64 = 1) -> SessionSubscription {
        SessionSubscription(store: self, session: session, from: from)
    }
}

/// The events of a session from one seq to the head, as `read(_:from:limit:)` returns them.
public struct SessionEvents: AsyncSequence, Sendable {
    public typealias Element = Event

    let store: any SessionStore
    let session: SessionID
    let from: UInt64
    let limit: Int?
    static let pageSize = 512

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(store: store, session: session, next: Swift.max(from, 1), remaining: limit)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let store: any SessionStore
        let session: SessionID
        var next: UInt64
        var remaining: Int?
        var stopAfter: UInt64?
        var buffer: [Event] = []
        var index = 0

        init(store: any SessionStore, session: SessionID, next: UInt64, remaining: Int?) {
            self.store = store
            self.session = session
            self.next = next
            self.remaining = remaining
        }

        public mutating func next() async throws -> Event? {
            if index < buffer.count {
                defer { index += 1 }
                return buffer[index]
            }
            if let remaining, remaining <= 0 { return nil }
            if let stopAfter, next > stopAfter { return nil }
            let want = Swift.min(remaining ?? SessionEvents.pageSize, SessionEvents.pageSize)
            let page = try await store.readPage(session, from: next, limit: want)
            if stopAfter == nil { stopAfter = page.head }
            let events = page.events.prefix { $0.seq <= (stopAfter ?? page.head) }
            guard !events.isEmpty else { return nil }
            buffer = Array(events)
            index = 1
            next = buffer[buffer.count - 1].seq + 1
            if let left = remaining { remaining = left - buffer.count }
            return buffer[0]
        }
    }
}

/// A live tail of a session, as `subscribe(_:from:)` returns it. It ends (returns nil) when
/// the consuming task is cancelled, and throws when the session cannot be read.
public struct SessionSubscription: AsyncSequence, Sendable {
    public typealias Element = Event

    let store: any SessionStore
    let session: SessionID
    let from: UInt64

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(store: store, session: session, next: Swift.max(from, 1))
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let store: any SessionStore
        let session: SessionID
        var next: UInt64
        var buffer: [Event] = []
        var index = 0

        init(store: any SessionStore, session: SessionID, next: UInt64) {
            self.store = store
            self.session = session
            self.next = next
        }

        public mutating func next() async throws -> Event? {
            while index >= buffer.count {
                if Task.isCancelled { return nil }
                let page = try await store.readPage(session, from: next, limit: SessionEvents.pageSize)
                if page.events.isEmpty {
                    do {
                        _ = try await store.waitForHead(session, beyond: next - 1)
                    } catch is CancellationError {
                        return nil
                    }
                    continue
                }
                buffer = page.events
                index = 0
                next = buffer[buffer.count - 1].seq + 1
            }
            defer { index += 1 }
            return buffer[index]
        }
    }
}
