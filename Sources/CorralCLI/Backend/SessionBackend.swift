import CorralAPI
import CorralCore
import CorralService
import CorralSession
import Foundation

/// Where a session command is carried out: on the session files under the state directory
/// (embedded), or by a running corral service over HTTP. The session commands are written
/// against this seam only, so each prints the same either way.
protocol SessionBackend: Sendable {
    /// `tenant` nil: the caller's own (the local tenant embedded; the token's remotely).
    func create(id: SessionID?, tenant: TenantID?, metadata: [String: String]) async throws -> SessionInfo
    func list() async throws -> [SessionInfo]
    func session(_ id: SessionID) async throws -> SessionInfo
    /// The lease of the current epoch, for a writer that does not take the session over.
    func currentLease(_ id: SessionID) async throws -> Lease
    /// Appends in order; `landed` sees each stored part once it is durable. The service
    /// takes the events in parts when one request would be too large; a failure keeps the
    /// parts before it.
    func append(
        _ id: SessionID, _ events: [NewEvent], expectedSeq: UInt64?, lease: Lease, durability: Durability,
        landed: (AppendResult) async throws -> Void
    ) async throws
    func readPage(_ id: SessionID, from: UInt64, limit: Int) async throws -> EventPage
    /// Hands each event from `from` on to `handler`, live, until it returns false or the task
    /// is cancelled.
    func follow(_ id: SessionID, from: UInt64, _ handler: @escaping @Sendable (Event) async throws -> Bool) async throws
    func wake(_ id: SessionID) async throws -> Lease
    func fork(_ id: SessionID, at seq: UInt64, newID: SessionID?) async throws -> SessionInfo
    /// The largest event the backend takes, once encoded.
    var maxEventBytes: Int { get }
    func shutdown()
}

extension SessionBackend {
    /// Events from `from` to the head as it was at the first page, at most `limit`.
    func read(_ id: SessionID, from: UInt64, limit: Int?, _ body: ([Event]) throws -> Void) async throws {
        var next = max(from, 1)
        var remaining = limit
        var stopAfter: UInt64?
        while remaining.map({ $0 > 0 }) ?? true {
            let page = try await readPage(id, from: next, limit: min(remaining ?? Self.pageSize, Self.pageSize))
            let last = stopAfter ?? page.head
            stopAfter = last
            let events = page.events.prefix { $0.seq <= last }
            guard let tail = events.last else { return }
            try body(Array(events))
            next = tail.seq + 1
            remaining = remaining.map { $0 - events.count }
        }
    }

    static var pageSize: Int { 512 }
}

/// The session files under the state directory, in this process.
struct EmbeddedSessionBackend: SessionBackend {
    let store: any SessionStore

    func create(id: SessionID?, tenant: TenantID?, metadata: [String: String]) async throws -> SessionInfo {
        try await store.create(id: id, tenant: tenant ?? .local, metadata: metadata)
    }

    func list() async throws -> [SessionInfo] { try await store.list() }

    func session(_ id: SessionID) async throws -> SessionInfo { try await store.session(id) }

    func currentLease(_ id: SessionID) async throws -> Lease { try await store.currentLease(id) }

    func append(
        _ id: SessionID, _ events: [NewEvent], expectedSeq: UInt64?, lease: Lease, durability: Durability,
        landed: (AppendResult) async throws -> Void
    ) async throws {
        try await landed(
            try await store.append(id, events, expectedSeq: expectedSeq, lease: lease, durability: durability))
    }

    func readPage(_ id: SessionID, from: UInt64, limit: Int) async throws -> EventPage {
        try await store.readPage(id, from: from, limit: limit)
    }

    func follow(_ id: SessionID, from: UInt64, _ handler: @escaping @Sendable (Event) async throws -> Bool) async throws
    {
        for try await event in store.subscribe(id, from: from) {
            guard try await handler(event) else { return }
        }
    }

    func wake(_ id: SessionID) async throws -> Lease { try await store.wake(id) }

    func fork(_ id: SessionID, at seq: UInt64, newID: SessionID?) async throws -> SessionInfo {
        try await store.fork(id, atSeq: seq, newID: newID)
    }

    var maxEventBytes: Int { SessionStoreSelection.maxEventBytes(store) }

    func shutdown() {}
}

/// A corral service, over HTTP: the caller's tenant is the token's (the local tenant on the
/// state directory's socket).
struct RemoteSessionBackend: SessionBackend {
    let client: CorralClient

    func create(id: SessionID?, tenant: TenantID?, metadata: [String: String]) async throws -> SessionInfo {
        if let tenant {
            // On the local socket every request is the local tenant's; on TCP the token says.
            let local: Bool
            if case .unixSocket = client.endpoint { local = true } else { local = false }
            guard local && tenant == .local else {
                throw CorralError.invalidArgument(
                    "--tenant cannot be chosen through a corral service: the session belongs to the tenant of CORRAL_TOKEN",
                    hint: "leave out --tenant, or use that tenant's token")
            }
        }
        return try await explained(id) { try await client.createSession(id: id, metadata: metadata) }
    }

    func list() async throws -> [SessionInfo] { try await client.listSessions() }

    func session(_ id: SessionID) async throws -> SessionInfo {
        try await explained(id) { try await client.session(id) }
    }

    func currentLease(_ id: SessionID) async throws -> Lease {
        Lease(session: id, epoch: try await session(id).epoch)
    }

    func append(
        _ id: SessionID, _ events: [NewEvent], expectedSeq: UInt64?, lease: Lease, durability: Durability,
        landed: (AppendResult) async throws -> Void
    ) async throws {
        try await explained(id) {
            try await client.appendEvents(
                id, events, expectedSeq: expectedSeq, epoch: lease.epoch, durability: durability, landed: landed)
        }
    }

    func readPage(_ id: SessionID, from: UInt64, limit: Int) async throws -> EventPage {
        try await explained(id) { try await client.events(id, from: max(from, 1), limit: min(max(limit, 1), 10_000)) }
    }

    func follow(_ id: SessionID, from: UInt64, _ handler: @escaping @Sendable (Event) async throws -> Bool) async throws
    {
        try await explained(id) { try await client.followEvents(id, from: from, handler) }
    }

    func wake(_ id: SessionID) async throws -> Lease {
        try await explained(id) { try await client.wakeSession(id) }
    }

    func fork(_ id: SessionID, at seq: UInt64, newID: SessionID?) async throws -> SessionInfo {
        try await explained(id) { try await client.forkSession(id, at: seq, newID: newID) }
    }

    /// The service refuses larger request bodies; an event must fit in one.
    var maxEventBytes: Int { min(FileSessionStore.Configuration().maxEventBytes, CorralClient.maxJSONBodyBytes) }

    func shutdown() { client.shutdown() }

    private func explained<T>(_ id: SessionID?, _ body: () async throws -> T) async throws -> T {
        try await explainingMissingSession(body)
    }
}

/// Adds the hint the embedded store gives to a session the service does not know (or that
/// is another tenant's: the service answers both the same).
func explainingMissingSession<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch var error as CorralError where error.code == .notFound && error.hint == nil {
        error.hint = "list sessions with `corral session ls`"
        throw error
    }
}
