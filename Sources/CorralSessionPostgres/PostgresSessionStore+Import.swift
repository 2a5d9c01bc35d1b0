import CorralCore
import CorralSession
import PostgresNIO

extension PostgresSessionStore: SessionImporting {
    public func importSession(_ info: SessionInfo) async throws {
        try Self.check(info.metadata)
        let id = try SessionID(validating: info.id.rawValue)
        let tenant = try TenantID(validating: info.tenant.rawValue)
        let created = Timestamp.nanoseconds(info.created)
        let metadata = Self.encode(info.metadata)
        let forkedFrom = info.forkedFrom?.session.rawValue
        let forkedAt = info.forkedFrom.map { Int64(clamping: $0.seq) }
        let epoch = Int64(clamping: max(1, info.epoch))
        let inserted = try await connections.withConnection("copying session \(id)") { connection in
            try await connection.rows(
                """
                INSERT INTO sessions (id, tenant, created_ns, metadata, forked_from, forked_at, head, epoch)
                VALUES (\(id.rawValue), \(tenant.rawValue), \(created), \(metadata), \(forkedFrom), \(forkedAt), 0, \(epoch))
                ON CONFLICT (id) DO NOTHING RETURNING id
                """, logger: logger
            ).decode(String.self).gather().count
        }
        guard inserted == 1 else {
            throw CorralError(.alreadyExists, "session \(id) already exists in the session store at \(url)")
        }
    }

    public func importEvents(_ session: SessionID, _ events: [Event]) async throws {
        guard let first = events.first else { return }
        let (checked, stamps) = try Self.checked(
            events, session: session, maxEventBytes: configuration.maxEventBytes)
        let written = try await connections.withConnection("copying events into session \(session)") {
            connection -> Int64? in
            try await connection.rows("BEGIN", logger: logger)
            do {
                let heads = try await connection.rows(
                    "SELECT head FROM sessions WHERE id = \(session.rawValue) FOR UPDATE", logger: logger
                ).decode(Int64.self).gather()
                guard let head = heads.first else {
                    _ = try? await connection.rows("ROLLBACK", logger: logger)
                    return nil
                }
                // Events already there (a copy run again) are skipped when their ids match.
                let skip = Int(max(0, head + 1 - Int64(clamping: first.seq)))
                if skip > 0 {
                    let stored = try await connection.rows(
                        """
                        SELECT event_id FROM events WHERE session_id = \(session.rawValue)
                        AND seq BETWEEN \(Int64(clamping: first.seq)) AND \(Int64(clamping: first.seq) + Int64(min(skip, events.count)) - 1)
                        ORDER BY seq
                        """, logger: logger
                    ).decode(String.self).gather()
                    guard stored == events.prefix(skip).map(\.id.rawValue) else {
                        throw CorralError(
                            .conflict,
                            "session \(session) in the session store at \(url) holds other events from seq \(first.seq)",
                            hint: "copy into an empty store, or remove the session there first")
                    }
                }
                guard Int64(clamping: first.seq) + Int64(skip) == head + 1 else {
                    throw CorralError(
                        .conflict, "events from seq \(first.seq) do not follow session \(session)'s head \(head)")
                }
                let rest = Array(zip(events, zip(checked, stamps)).dropFirst(skip))
                if !rest.isEmpty {
                    let seqs = rest.map { Int64(clamping: $0.0.seq) }
                    let ids = rest.map { $0.1.0.id.rawValue }
                    let types = rest.map { String(decoding: $0.1.0.type, as: UTF8.self) }
                    let times = rest.map { $0.1.1.time }
                    let epochs = rest.map { Int64(clamping: $0.1.1.epoch) }
                    let data = rest.map { String(decoding: $0.1.0.data, as: UTF8.self) }
                    try await connection.rows(
                        """
                        INSERT INTO events (session_id, seq, event_id, type, time_ns, epoch, data)
                        SELECT \(session.rawValue), s, i, t, tm, e, d
                        FROM unnest(\(seqs), \(ids), \(types), \(times), \(epochs), \(data)) AS u (s, i, t, tm, e, d)
                        """, logger: logger)
                    try await connection.rows(
                        "UPDATE sessions SET head = \(seqs[seqs.count - 1]) WHERE id = \(session.rawValue)",
                        logger: logger)
                }
                try await connection.rows("COMMIT", logger: logger)
                return Int64(clamping: events[events.count - 1].seq)
            } catch {
                _ = try? await connection.rows("ROLLBACK", logger: logger)
                throw error
            }
        }
        guard let written else { throw CorralError.notFound("no session \(session) in the session store at \(url)") }
        await watcher.notify([session.rawValue: written])
    }
}
