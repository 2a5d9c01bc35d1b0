import CorralCore
import CorralSession
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// The session store in PostgreSQL, with the file store's semantics (see `SessionStore`):
/// a `sessions` row per session (head, epoch, metadata) and an `events` row per event, in the
/// schema the URL names. Several processes, on several hosts, may share one database.
///
/// - Appends run in `append_batch`, one statement: the session's row is locked, the lease
///   epoch and `expectedSeq` checked and the events inserted in one transaction, so a stale
///   writer is fenced by the same lock that orders appends. Concurrent appends are committed
///   together (`PostgresAppendQueue`): one transaction and one WAL flush for many.
/// - Durability: `.fsync` appends commit with `synchronous_commit` on and return after the
///   flush; `.groupCommit` and `.none` commit with it off (the server's WAL writer flushes
///   within `wal_writer_delay`), and `sync(_:)` forces a flush.
/// - Live tails: their sessions' new heads are NOTIFYed on the store's channel, by a lone
///   append in its own transaction (`append_one`) and after a batch commits otherwise;
///   `waitForHead` LISTENs on one connection per store and then reads the head itself.
///
/// Make one with `connect(_:logger:)`, which checks the database and migrates the schema, and
/// call `shutdown()` when done.
public final class PostgresSessionStore: SessionStore {
    public struct Configuration: Sendable {
        public var url: PostgresStoreURL
        /// Connections for appends, reads and the rest (the listener has one more of its own).
        public var maxConnections: Int = 8
        /// Transactions appending at once; further appends wait and are committed together.
        public var maxCommitters: Int = 4
        /// Appends taken into one transaction at most.
        public var maxBatch: Int = 64
        public var connectTimeout: Duration = .seconds(5)
        /// The same limits as the file store's, so that both refuse the same events.
        public var maxEventBytes: Int = 4 << 20
        public var maxAppendBytes: Int = 64 << 20
        public var defaultPageSize: Int = 512
        public var maxPageBytes: Int = 8 << 20

        public init(url: PostgresStoreURL) { self.url = url }
    }

    public let configuration: Configuration
    let connections: PostgresConnections
    let watcher: PostgresHeadWatcher
    let logger: Logger
    private let appends: Mutex<PostgresAppendQueue?> = Mutex(nil)
    private let idSeed = Mutex(UInt64.random(in: 0...UInt64.max))
    private let commitCount = CommitCounter()

    /// Append transactions committed so far (each may hold many appends).
    public var commits: Int { commitCount.value.load(ordering: .relaxed) }

    final class CommitCounter: Sendable {
        let value = Atomic<Int>(0)
    }

    public var url: PostgresStoreURL { configuration.url }

    /// Connects once (a wrong URL, password or a database that is down fails here, with one
    /// line that names the URL without its password), applies the schema's migrations and
    /// returns the store. A schema newer than this corral's is refused and left untouched.
    public static func connect(_ configuration: Configuration, logger: Logger) async throws -> PostgresSessionStore {
        let store = try PostgresSessionStore(configuration: configuration, logger: logger)
        let connection = try await store.connections.connect()
        do {
            try await PostgresSchema.migrate(connection, url: configuration.url, logger: logger)
        } catch {
            try? await connection.close()
            throw PostgresStoreError.map(error, url: configuration.url, doing: "preparing the schema")
        }
        try? await connection.close()
        return store
    }

    public static func connect(url: String, logger: Logger) async throws -> PostgresSessionStore {
        try await connect(Configuration(url: try PostgresStoreURL(parsing: url)), logger: logger)
    }

    private init(configuration: Configuration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        self.connections = try PostgresConnections(
            url: configuration.url, maximum: configuration.maxConnections,
            connectTimeout: configuration.connectTimeout, logger: logger)
        self.watcher = PostgresHeadWatcher(
            channel: "corral_heads_\(configuration.url.schema)", connections: connections, logger: logger)
        let queue = PostgresAppendQueue(
            maxCommitters: min(configuration.maxCommitters, configuration.maxConnections),
            maxBatch: configuration.maxBatch, maxBatchBytes: configuration.maxAppendBytes,
            commit: { [connections, watcher, logger, commitCount] requests, alone in
                commitCount.value.add(1, ordering: .relaxed)
                return try await Self.commit(
                    requests, alone: alone, connections: connections, watcher: watcher, logger: logger)
            })
        appends.withLock { $0 = queue }
    }

    /// Closes the connections; calls under way finish first.
    public func shutdown() async {
        await watcher.shutdown()
        await connections.shutdown()
    }

    // MARK: SessionStore

    public func create(id: SessionID?, tenant: TenantID, metadata: [String: String]) async throws -> SessionInfo {
        try Self.check(metadata)
        let id = try id.map { try SessionID(validating: $0.rawValue) } ?? SessionID.random()
        _ = try TenantID(validating: tenant.rawValue)
        let created = Timestamp.nowNanoseconds()
        let encoded = Self.encode(metadata)
        let inserted = try await connections.withConnection("creating session \(id)") { connection in
            try await connection.rows(
                """
                INSERT INTO sessions (id, tenant, created_ns, metadata) VALUES (\(id.rawValue), \(tenant.rawValue), \(created), \(encoded))
                ON CONFLICT (id) DO NOTHING RETURNING id
                """, logger: logger
            ).decode(String.self).gather().count
        }
        guard inserted == 1 else {
            throw CorralError(
                .alreadyExists, "session \(id) already exists in the session store at \(url)",
                hint: "choose another id, or leave it out to get a new one")
        }
        return SessionInfo(
            id: id, tenant: tenant, created: Timestamp.date(nanoseconds: created), metadata: metadata, forkedFrom: nil,
            head: 0, epoch: 1)
    }

    public func append(
        _ session: SessionID, _ events: [NewEvent], expectedSeq: UInt64?, lease: Lease, durability: Durability
    ) async throws -> AppendResult {
        guard lease.session == session else {
            throw CorralError(
                .invalidArgument, "the lease is for session \(lease.session), not \(session)",
                hint: "wake \(session) (or ask for its current lease) and append with that")
        }
        // Event ids for events the caller gave none: the same shape as the file store's.
        var generator = SplitMix64(
            seed: idSeed.withLock { seed in
                seed &+= 0x9E37_79B9_7F4A_7C15
                return seed
            })
        let checked = try NewEvent.check(
            events, session: session, maxEventBytes: configuration.maxEventBytes,
            maxAppendBytes: configuration.maxAppendBytes, recordSize: { $0 + $1 + $2 + 40 }, ids: &generator)
        let sync: Bool
        if case .fsync = durability { sync = true } else { sync = false }
        guard let queue = appends.withLock({ $0 }) else {
            throw CorralError(.cancelled, "the session store at \(url) was shut down")
        }
        let outcome = try await queue.submit(
            PostgresAppendQueue.Request(
                session: session, epoch: lease.epoch, expectedSeq: expectedSeq, events: checked,
                time: Timestamp.nowNanoseconds(), sync: sync))
        switch outcome.kind {
        case "ok":
            let appended = checked.enumerated().map {
                AppendResult.Appended(seq: outcome.first + UInt64($0.offset), id: $0.element.id)
            }
            return AppendResult(
                events: appended, written: outcome.written, head: outcome.head, durable: outcome.durable)
        case "missing":
            throw missing(session)
        case "epoch":
            if lease.epoch < outcome.epoch {
                throw CorralError(
                    .conflict,
                    "lease epoch \(lease.epoch) of session \(session) is stale: the session was woken at epoch \(outcome.epoch)",
                    hint:
                        "another harness took the session over with wake; stop writing to it, or wake it again to take it back"
                )
            }
            throw CorralError(
                .conflict,
                "lease epoch \(lease.epoch) of session \(session) was never given out: the current epoch is \(outcome.epoch)",
                hint: "get a lease from wake (or currentLease for a plain writer)")
        case "expected":
            let expected = expectedSeq ?? 0
            throw CorralError(
                .conflict,
                "session \(session): expected the first new event to get seq \(expected), but the head is \(outcome.head) (next seq \(outcome.head + 1))",
                hint:
                    "read the session from seq \(min(expected, outcome.head + 1)) and decide again; a retry with the same event ids at the same seqs would have succeeded"
            )
        case "duplicate":
            throw CorralError(
                .conflict,
                "session \(session): event id \(checked[0].id) is already stored at seq \(outcome.first) with different events after it",
                hint: "event ids must be unique within a session; pass expectedSeq to retry safely")
        default:
            throw CorralError(.internalError, "the session store answered '\(outcome.kind)' to an append")
        }
    }

    /// One transaction for every append of `requests`, sorted by session (a stable sort: one
    /// session's appends keep their order) so that batches lock rows in the same order.
    /// One event with the queue to itself (`alone`) goes through `append_one`, which tells
    /// the tails in its own transaction; a batch tells them after it commits.
    static func commit(
        _ requests: [PostgresAppendQueue.Request], alone: Bool, connections: PostgresConnections,
        watcher: PostgresHeadWatcher, logger: Logger
    ) async throws -> [PostgresAppendQueue.Outcome] {
        typealias Row = (Int32, String, Int64, Int32, Int64, Int64)
        if alone, requests.count == 1, let request = requests.first, request.events.count == 1 {
            let event = request.events[0]
            let query: PostgresQuery = """
                SELECT r_call, r_outcome, r_first, r_written, r_head, r_epoch FROM append_one(
                    \(request.session.rawValue), \(Int64(clamping: request.epoch)),
                    \(request.expectedSeq.map { Int64(clamping: $0) } ?? -1), \(request.time), \(event.id.rawValue),
                    \(event.callerID), \(String(decoding: event.type, as: UTF8.self)),
                    \(String(decoding: event.data, as: UTF8.self)), \(request.sync), \(watcher.channel))
                """
            let rows = try await connections.withConnection("appending to session \(request.session)") { connection in
                try await connection.allRows(query, logger: logger).map { try $0.decode(Row.self) }
            }
            guard let row = rows.first, row.0 == 1 else {
                throw CorralError(.internalError, "the session store did not answer an append")
            }
            return [
                PostgresAppendQueue.Outcome(
                    kind: row.1, first: UInt64(max(row.2, 0)), written: Int(row.3), head: UInt64(max(row.4, 0)),
                    epoch: UInt64(max(row.5, 0)), durable: request.sync)
            ]
        }
        let order = requests.indices.sorted {
            (requests[$0].session.rawValue, $0) < (requests[$1].session.rawValue, $1)
        }
        var sessions: [String] = []
        var epochs: [Int64] = []
        var expected: [Int64] = []
        var counts: [Int32] = []
        var times: [Int64] = []
        var ids: [String] = []
        var caller: [Bool] = []
        var types: [String] = []
        var data: [String] = []
        for index in order {
            let request = requests[index]
            sessions.append(request.session.rawValue)
            epochs.append(Int64(clamping: request.epoch))
            expected.append(request.expectedSeq.map { Int64(clamping: $0) } ?? -1)
            counts.append(Int32(request.events.count))
            times.append(request.time)
            for event in request.events {
                ids.append(event.id.rawValue)
                caller.append(event.callerID)
                types.append(String(decoding: event.type, as: UTF8.self))
                data.append(String(decoding: event.data, as: UTF8.self))
            }
        }
        let sync = requests.contains(where: \.sync)
        let what =
            requests.count == 1
            ? "appending to session \(requests[0].session)" : "appending to \(requests.count) sessions"
        let rows = try await connections.withConnection(what) { connection in
            try await connection.allRows(
                """
                SELECT r_call, r_outcome, r_first, r_written, r_head, r_epoch FROM append_batch(
                    \(sessions), \(epochs), \(expected), \(counts), \(times), \(ids), \(caller), \(types), \(data),
                    \(sync))
                """, logger: logger
            ).map { try $0.decode(Row.self) }
        }
        // Wake tails, once per session with its newest head, on the watcher's own connection
        // and without waiting for the answer.
        var heads: [String: Int64] = [:]
        for row in rows where row.1 == "ok" && row.3 > 0 && row.0 >= 1 && Int(row.0) <= order.count {
            let session = sessions[Int(row.0) - 1]
            heads[session] = max(heads[session] ?? 0, row.4)
        }
        if !heads.isEmpty { await watcher.notify(heads) }
        var outcomes = [PostgresAppendQueue.Outcome?](repeating: nil, count: requests.count)
        for (call, kind, first, written, head, epoch) in rows where call >= 1 && Int(call) <= order.count {
            outcomes[order[Int(call) - 1]] = PostgresAppendQueue.Outcome(
                kind: kind, first: UInt64(max(first, 0)), written: Int(written), head: UInt64(max(head, 0)),
                epoch: UInt64(max(epoch, 0)), durable: sync)
        }
        return try outcomes.map {
            guard let outcome = $0 else {
                throw CorralError(.internalError, "the session store did not answer every append of a batch")
            }
            return outcome
        }
    }

    public func readPage(_ session: SessionID, from: UInt64, limit: Int?) async throws -> EventPage {
        if let limit, limit < 0 {
            throw CorralError(.invalidArgument, "a page limit cannot be negative (\(limit))")
        }
        let start = Int64(clamping: max(from, 1))
        let count = Int64(min(limit ?? configuration.defaultPageSize, 100_000))
        let rows = try await connections.withConnection("reading session \(session)") { connection in
            try await connection.rows(
                """
                SELECT s.head, e.seq, e.event_id, e.type, e.time_ns, e.epoch, e.data FROM sessions s
                LEFT JOIN LATERAL (
                    SELECT * FROM events WHERE session_id = s.id AND seq >= \(start) ORDER BY seq LIMIT \(count)
                ) e ON true
                WHERE s.id = \(session.rawValue)
                """, logger: logger
            ).decode((Int64, Int64?, String?, String?, Int64?, Int64?, String?).self).gather()
        }
        guard let first = rows.first else { throw missing(session) }
        let head = UInt64(max(first.0, 0))
        var events: [Event] = []
        events.reserveCapacity(rows.count)
        var bytes = 0
        for row in rows {
            guard let seq = row.1, let id = row.2, let type = row.3, let time = row.4, let epoch = row.5,
                let text = row.6
            else { continue }
            let data: JSONValue
            do {
                data = try JSONCodec.decode(text)
            } catch {
                throw CorralError(
                    .corrupted,
                    "session \(session): event \(seq) in the session store is not JSON (\(error.description))",
                    hint: "it was written that way; inspect it with scripts/postgres.sh psql")
            }
            events.append(
                Event(
                    seq: UInt64(seq), id: EventID(unchecked: id), type: type, time: Timestamp.date(nanoseconds: time),
                    epoch: UInt64(epoch), data: data))
            bytes += id.utf8.count + type.utf8.count + text.utf8.count
            if bytes >= configuration.maxPageBytes { break }
        }
        return EventPage(events: events, next: (events.last?.seq ?? UInt64(start) - 1) + 1, head: head)
    }

    public func session(_ id: SessionID) async throws -> SessionInfo {
        let rows = try await connections.withConnection("reading session \(id)") { connection in
            try await connection.rows(
                "\(unescaped: Self.infoColumns) FROM sessions WHERE id = \(id.rawValue)", logger: logger
            ).decode(InfoRow.self).gather()
        }
        guard let row = rows.first else { throw missing(id) }
        return try info(row)
    }

    public func list() async throws -> [SessionInfo] {
        let rows = try await connections.withConnection("listing sessions") { connection in
            try await connection.rows("\(unescaped: Self.infoColumns) FROM sessions ORDER BY id", logger: logger)
                .decode(InfoRow.self).gather()
        }
        return try rows.map(info)
    }

    public func wake(_ id: SessionID) async throws -> Lease {
        let rows = try await connections.withConnection("waking session \(id)") { connection in
            try await connection.rows(
                "UPDATE sessions SET epoch = epoch + 1 WHERE id = \(id.rawValue) RETURNING epoch", logger: logger
            ).decode(Int64.self).gather()
        }
        guard let epoch = rows.first else { throw missing(id) }
        return Lease(session: id, epoch: UInt64(epoch))
    }

    public func currentLease(_ id: SessionID) async throws -> Lease {
        Lease(session: id, epoch: try await session(id).epoch)
    }

    public func fork(_ id: SessionID, atSeq: UInt64, newID: SessionID?) async throws -> SessionInfo {
        let newID = try newID.map { try SessionID(validating: $0.rawValue) } ?? SessionID.random()
        let created = Timestamp.nowNanoseconds()
        let at = Int64(clamping: atSeq)
        let rows = try await connections.withConnection("forking session \(id)") { connection in
            try await connection.rows(
                """
                SELECT r_outcome, r_head, r_tenant, r_metadata, r_epoch
                FROM fork_session(\(id.rawValue), \(newID.rawValue), \(at), \(created))
                """, logger: logger
            ).decode((String, Int64?, String?, String?, Int64?).self).gather()
        }
        guard let row = rows.first else { throw missing(id) }
        let head = UInt64(max(row.1 ?? 0, 0))
        switch row.0 {
        case "ok": break
        case "missing": throw missing(id)
        case "past":
            throw CorralError(
                .invalidArgument, "cannot fork session \(id) at seq \(atSeq): its head is \(head)",
                hint: "fork at a seq from 0 to \(head)")
        case "exists":
            throw CorralError(
                .alreadyExists, "session \(newID) already exists in the session store at \(url)",
                hint: "choose another id, or leave it out to get a new one")
        default:
            throw CorralError(.internalError, "the session store answered '\(row.0)' to a fork")
        }
        return SessionInfo(
            id: newID, tenant: TenantID(unchecked: row.2 ?? TenantID.local.rawValue),
            created: Timestamp.date(nanoseconds: created), metadata: try Self.decodeMetadata(row.3 ?? "{}", id),
            forkedFrom: ForkOrigin(session: id, seq: atSeq), head: atSeq, epoch: UInt64(max(row.4 ?? 1, 1)))
    }

    public func delete(_ id: SessionID) async throws {
        let rows = try await connections.withConnection("deleting session \(id)") { connection in
            try await connection.rows("DELETE FROM sessions WHERE id = \(id.rawValue) RETURNING id", logger: logger)
                .decode(String.self).gather()
        }
        guard !rows.isEmpty else { throw missing(id) }
    }

    /// A transaction that takes a transaction id commits with a WAL record, and with
    /// `synchronous_commit` on its commit waits for the WAL to be flushed up to it: every
    /// earlier commit, those made without waiting included, is then on disk.
    public func sync(_ id: SessionID) async throws {
        let rows = try await connections.withConnection("syncing session \(id)") { connection in
            try await connection.rows(
                "SELECT head FROM sessions WHERE id = \(id.rawValue) AND pg_current_xact_id() IS NOT NULL",
                logger: logger
            ).decode(Int64.self).gather()
        }
        guard !rows.isEmpty else { throw missing(id) }
    }

    public func waitForHead(_ id: SessionID, beyond seq: UInt64) async throws -> UInt64 {
        while true {
            try Task.checkCancellation()
            if let head = try await watcher.waitOnce(
                id, beyond: seq, readHead: { try await self.session(id).head })
            {
                return head
            }
        }
    }

    // MARK: Rows

    typealias InfoRow = (String, String, Int64, String, String?, Int64?, Int64, Int64)
    static let infoColumns = "SELECT id, tenant, created_ns, metadata, forked_from, forked_at, head, epoch"

    private func info(_ row: InfoRow) throws -> SessionInfo {
        let id = SessionID(unchecked: row.0)
        var origin: ForkOrigin?
        if let parent = row.4, let at = row.5 {
            origin = ForkOrigin(session: SessionID(unchecked: parent), seq: UInt64(at))
        }
        return SessionInfo(
            id: id, tenant: TenantID(unchecked: row.1), created: Timestamp.date(nanoseconds: row.2),
            metadata: try Self.decodeMetadata(row.3, id), forkedFrom: origin, head: UInt64(max(row.6, 0)),
            epoch: UInt64(max(row.7, 0)))
    }

    private func missing(_ id: SessionID) -> CorralError {
        CorralError(
            .notFound, "no session \(id) in the session store at \(url)", hint: "list sessions with `corral session ls`"
        )
    }

    static func encode(_ metadata: [String: String]) -> String {
        JSONCodec.string(.object(metadata.mapValues { .string($0) }))
    }

    static func decodeMetadata(_ text: String, _ id: SessionID) throws -> [String: String] {
        guard case .object(let members)? = try? JSONCodec.decode(text) else {
            throw CorralError(.corrupted, "session \(id): its metadata in the session store is not a JSON object")
        }
        return members.compactMapValues(\.stringValue)
    }

    static func check(_ metadata: [String: String]) throws {
        guard metadata.count <= 64 else {
            throw CorralError(.invalidArgument, "a session takes at most 64 metadata entries, not \(metadata.count)")
        }
        for (key, value) in metadata {
            guard !key.isEmpty, key.utf8.count <= 128, !key.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) else {
                throw CorralError(
                    .invalidArgument, "invalid metadata key '\(key.prefix(60))'",
                    hint: "keys are 1-128 bytes without control characters")
            }
            guard value.utf8.count <= 4096 else {
                throw CorralError(.invalidArgument, "metadata value of '\(key)' is over 4096 bytes")
            }
        }
    }
}

extension PostgresSessionStore {
    /// Drops the store's schema with every session in it, for good: for tests and benchmarks
    /// that made a schema of their own.
    public func dropSchema() async throws {
        let schema = url.schema
        try await connections.withConnection("dropping schema \(schema)") { connection in
            try await connection.rows("DROP SCHEMA IF EXISTS \(unescaped: schema) CASCADE", logger: logger)
            return ()
        }
    }
}

extension PostgresSessionStore {
    /// The rows and bytes a session's events take: for tests that check nothing was written.
    func storedBytes(_ id: SessionID) async throws -> Int {
        let rows = try await connections.withConnection("measuring session \(id)") { connection in
            try await connection.rows(
                """
                SELECT (count(*) * 1000000 + coalesce(sum(octet_length(event_id) + octet_length(type) + octet_length(data)), 0))::int8
                FROM events WHERE session_id = \(id.rawValue)
                """, logger: logger
            ).decode(Int64.self).gather()
        }
        return Int(rows.first ?? 0)
    }
}

extension PostgresSessionStore {
    /// Runs one statement with no parameters: for tests.
    func execute(_ sql: String) async throws {
        try await connections.withConnection("running a statement") { connection in
            try await connection.rows(PostgresQuery(unsafeSQL: sql), logger: logger)
            return ()
        }
    }

    /// The first column of the first row of a query, as an integer: for tests.
    func scalar(_ sql: String) async throws -> Int64? {
        try await connections.withConnection("running a query") { connection in
            try await connection.rows(PostgresQuery(unsafeSQL: sql), logger: logger).decode(Int64.self).gather()
                .first
        }
    }
}
