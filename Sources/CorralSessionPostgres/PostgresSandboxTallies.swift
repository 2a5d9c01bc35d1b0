import CorralCore
import CorralSession
import Logging
import PostgresNIO

/// `SandboxTallies` in the store's database: a row of `sandbox_tallies` per replica and
/// tenant. Freshness is the database's clock (`now()`), so replicas' clocks need not agree.
public struct PostgresSandboxTallies: SandboxTallies {
    let connections: PostgresConnections
    let logger: Logger

    public func publish(replica: String, tenant: TenantID, count: Int) async throws {
        try await connections.withConnection("publishing the sandbox count of tenant \(tenant)") { connection in
            // One statement: this count, and the replica's other counts marked fresh with it.
            try await connection.rows(
                """
                WITH others AS (
                    UPDATE sandbox_tallies SET seen_at = now() WHERE replica = \(replica) AND tenant <> \(tenant.rawValue))
                INSERT INTO sandbox_tallies (replica, tenant, count, seen_at)
                VALUES (\(replica), \(tenant.rawValue), \(count), now())
                ON CONFLICT (tenant, replica) DO UPDATE SET count = EXCLUDED.count, seen_at = EXCLUDED.seen_at
                """, logger: logger)
            return ()
        }
    }

    public func refresh(replica: String, counts: [TenantID: Int]) async throws {
        let tenants = counts.keys.map(\.rawValue)
        let values = tenants.map { counts[TenantID(unchecked: $0)] ?? 0 }
        try await connections.withConnection("refreshing the sandbox counts") { connection in
            try await connection.rows(
                """
                DELETE FROM sandbox_tallies WHERE replica = \(replica) AND NOT (tenant = ANY(\(tenants)))
                """, logger: logger)
            try await connection.rows(
                """
                INSERT INTO sandbox_tallies (replica, tenant, count, seen_at)
                SELECT \(replica), t.tenant, t.count, now() FROM unnest(\(tenants)::text[], \(values)::int[]) AS t (tenant, count)
                ON CONFLICT (tenant, replica) DO UPDATE SET count = EXCLUDED.count, seen_at = EXCLUDED.seen_at
                """, logger: logger)
            try await connection.rows(
                "UPDATE sandbox_tallies SET seen_at = now() WHERE replica = \(replica)", logger: logger)
            return ()
        }
    }

    public func othersCount(tenant: TenantID, excluding replica: String, freshWithin: Duration) async throws -> Int {
        let ms = Int64(freshWithin.milliseconds.rounded())
        let rows = try await connections.withConnection("counting the sandboxes of tenant \(tenant)") { connection in
            try await connection.rows(
                """
                SELECT coalesce(sum(count), 0)::int8 FROM sandbox_tallies
                WHERE tenant = \(tenant.rawValue) AND replica <> \(replica)
                    AND seen_at >= now() - \(ms) * interval '1 millisecond'
                """, logger: logger
            ).decode(Int64.self).gather()
        }
        return Int(rows.first ?? 0)
    }
}

extension PostgresSessionStore {
    /// The replicas' sandbox counts kept beside this store's sessions.
    public var sandboxTallies: PostgresSandboxTallies {
        PostgresSandboxTallies(connections: connections, logger: logger)
    }
}
