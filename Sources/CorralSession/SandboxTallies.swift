import CorralCore

/// How many sandboxes each service replica holds per tenant, when replicas share a store: each
/// replica publishes its own counts (on its engine and on the workers linked to it), and a
/// quota check adds the other replicas' fresh counts to its own, under the tenant's shared
/// lock (`SharedLocks`), so that a tenant's sandbox quota holds across replicas.
///
/// A replica's counts are fresh while it refreshes them; those of a replica that stopped (or
/// died) stop counting once they are older than the caller's `freshWithin`. The PostgreSQL
/// store keeps them in a table; the file store, which one process owns, has none.
public protocol SandboxTallies: Sendable {
    /// Sets `replica`'s count of `tenant`'s sandboxes, and marks all of `replica`'s counts
    /// fresh.
    func publish(replica: String, tenant: TenantID, count: Int) async throws

    /// Replaces all of `replica`'s counts with `counts` (tenants not named hold none).
    func refresh(replica: String, counts: [TenantID: Int]) async throws

    /// The sum of `tenant`'s counts of the replicas other than `replica` whose counts were
    /// published or refreshed within `freshWithin`.
    func othersCount(tenant: TenantID, excluding replica: String, freshWithin: Duration) async throws -> Int
}
