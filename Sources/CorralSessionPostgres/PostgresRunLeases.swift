import CorralCore
import CorralSession
import Logging
import PostgresNIO

/// `RunLeases` in the store's database: one row of `run_leases` per session that ever ran.
/// Expiry is the database's clock (`now()`), so replicas' clocks need not agree.
public struct PostgresRunLeases: RunLeases {
    let connections: PostgresConnections
    let logger: Logger

    public func claim(_ session: SessionID, tenant: TenantID, owner: String, ttl: Duration) async throws -> RunClaim {
        let ms = Int64(ttl.milliseconds.rounded())
        return try await connections.withConnection("claiming the run of session \(session)") { connection in
            let granted = try await connection.rows(
                """
                INSERT INTO run_leases (session_id, tenant, owner, epoch, state, expires_at)
                VALUES (\(session.rawValue), \(tenant.rawValue), \(owner), 1, 'running', now() + \(ms) * interval '1 millisecond')
                ON CONFLICT (session_id) DO UPDATE
                    SET owner = EXCLUDED.owner, epoch = run_leases.epoch + 1, state = 'running',
                        expires_at = EXCLUDED.expires_at
                    WHERE run_leases.state = 'ended' OR run_leases.expires_at < now()
                RETURNING epoch
                """, logger: logger
            ).decode(Int64.self).gather()
            if let epoch = granted.first { return .granted(epoch: epoch) }
            let holder = try await connection.rows(
                "SELECT owner FROM run_leases WHERE session_id = \(session.rawValue)", logger: logger
            ).decode(String.self).gather()
            return .held(by: holder.first ?? "another replica")
        }
    }

    public func renew(_ session: SessionID, owner: String, epoch: Int64, ttl: Duration) async throws -> RunRenewal {
        let ms = Int64(ttl.milliseconds.rounded())
        let states = try await connections.withConnection("renewing the run of session \(session)") { connection in
            try await connection.rows(
                """
                UPDATE run_leases
                SET expires_at = CASE WHEN state = 'running' THEN now() + \(ms) * interval '1 millisecond' ELSE expires_at END
                WHERE session_id = \(session.rawValue) AND owner = \(owner) AND epoch = \(epoch) AND state <> 'ended'
                RETURNING state
                """, logger: logger
            ).decode(String.self).gather()
        }
        switch states.first {
        case "running": return .renewed
        case "stopping": return .stopRequested
        default: return .lost
        }
    }

    public func release(_ session: SessionID, owner: String, epoch: Int64, handOver: Bool) async throws {
        try await connections.withConnection("releasing the run of session \(session)") { connection in
            try await connection.rows(
                """
                UPDATE run_leases
                SET state = CASE WHEN \(handOver) AND state = 'running' THEN 'running' ELSE 'ended' END,
                    expires_at = now()
                WHERE session_id = \(session.rawValue) AND owner = \(owner) AND epoch = \(epoch)
                """, logger: logger)
            return ()
        }
    }

    public func requestStop(_ session: SessionID) async throws -> String? {
        let rows = try await connections.withConnection("stopping the run of session \(session)") { connection in
            try await connection.rows(
                """
                UPDATE run_leases
                SET state = CASE WHEN state = 'running' AND expires_at >= now() THEN 'stopping' ELSE 'ended' END
                WHERE session_id = \(session.rawValue) AND state <> 'ended'
                RETURNING state, owner
                """, logger: logger
            ).decode((String, String).self).gather()
        }
        guard let (state, owner) = rows.first, state == "stopping" else { return nil }
        return owner
    }

    public func claimExpired(owner: String, ttl: Duration, limit: Int) async throws -> [ClaimedRun] {
        let ms = Int64(ttl.milliseconds.rounded())
        let rows = try await connections.withConnection("taking over runs") { connection in
            // A stop asked of an owner that is gone is done: nobody takes that run over.
            try await connection.rows(
                "UPDATE run_leases SET state = 'ended' WHERE state = 'stopping' AND expires_at < now()",
                logger: logger)
            return try await connection.rows(
                """
                UPDATE run_leases SET owner = \(owner), epoch = epoch + 1,
                    expires_at = now() + \(ms) * interval '1 millisecond'
                WHERE session_id IN (
                    SELECT session_id FROM run_leases WHERE state = 'running' AND expires_at < now()
                    ORDER BY expires_at LIMIT \(limit) FOR UPDATE SKIP LOCKED)
                RETURNING session_id, tenant, epoch
                """, logger: logger
            ).decode((String, String, Int64).self).gather()
        }
        return rows.map {
            ClaimedRun(session: SessionID(unchecked: $0.0), tenant: TenantID(unchecked: $0.1), epoch: $0.2)
        }
    }

    public func lease(_ session: SessionID) async throws -> RunLease? {
        let rows = try await connections.withConnection("reading the run of session \(session)") { connection in
            try await connection.rows(
                """
                SELECT owner, epoch, state, expires_at < now() FROM run_leases WHERE session_id = \(session.rawValue)
                """, logger: logger
            ).decode((String, Int64, String, Bool).self).gather()
        }
        guard let (owner, epoch, state, expired) = rows.first else { return nil }
        return RunLease(owner: owner, epoch: epoch, state: RunLease.State(rawValue: state) ?? .ended, expired: expired)
    }
}

extension PostgresSessionStore {
    /// The run leases kept beside this store's sessions.
    public var runLeases: PostgresRunLeases { PostgresRunLeases(connections: connections, logger: logger) }
}
