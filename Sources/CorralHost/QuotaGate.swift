import CorralCore
import CorralSession

/// Keeps concurrent creates of one tenant from racing past its quota together. Quotas bound
/// the tenants that come with tokens: the operator on the host's unix socket (`local`), who
/// could drive the engine directly anyway, is not held to them, and its creates skip the count
/// (a listing of every container, a few milliseconds of each warm create).
///
/// With a store that replicas share (PostgreSQL: `locks` and `tallies`), a count and its
/// create run under a lock per tenant and kind that every replica takes, so that the quota
/// holds across them. Sessions are counted in the store itself. Sandboxes are counted where
/// they run: on this replica's engine, on every worker (each asked for its own count under
/// the lock, `WorkerFleet.liveCount`: workers keep a link to every replica), and on the other
/// replicas' engines, by the counts they publish (`SandboxTallies`, fresh within
/// `freshWithin`; `published`). This replica publishes before it lets the lock go, and
/// `SandboxTallyService` refreshes.
package actor QuotaGate {
    /// What a quota counts.
    package enum Kind: String, Sendable {
        case sandboxes, sessions
    }

    private struct Key: Hashable {
        var tenant: TenantID
        var kind: Kind
    }

    private var pending: [Key: Int] = [:]
    package nonisolated let locks: (any SharedLocks)?
    package nonisolated let tallies: (any SandboxTallies)?
    package nonisolated let replica: String
    package nonisolated let freshWithin: Duration
    /// The count of a tenant's sandboxes this replica publishes for the others.
    package nonisolated let published: @Sendable (TenantID) async throws -> Int

    package init(
        locks: (any SharedLocks)? = nil, tallies: (any SandboxTallies)? = nil, replica: String = "local",
        freshWithin: Duration = .seconds(30), published: @escaping @Sendable (TenantID) async throws -> Int = { _ in 0 }
    ) {
        self.locks = locks
        self.tallies = tallies
        self.replica = replica
        self.freshWithin = freshWithin
        self.published = published
    }

    /// Runs `body` when `current() + pending < limit` (plus, for sandboxes across replicas,
    /// the other replicas' counts), counting it as pending meanwhile.
    package func admit<T: Sendable>(
        _ tenant: TenantID, limit: Int, what kind: Kind, current: () async throws -> Int,
        _ body: @Sendable () async throws -> T
    ) async throws -> T {
        if tenant == .local { return try await body() }
        let key = Key(tenant: tenant, kind: kind)
        guard let locks, kind == .sessions || tallies != nil else {
            return try await admitHere(key, limit: limit, current: current, body)
        }
        return try await locks.withLock("corral-quota:\(tenant):\(kind.rawValue)", isolation: self) {
            guard kind == .sandboxes, let tallies else {
                return try await admitHere(key, limit: limit, current: current, body)
            }
            let others = try await tallies.othersCount(tenant: tenant, excluding: replica, freshWithin: freshWithin)
            let made = try await admitHere(key, limit: limit, current: { try await current() + others }, body)
            // Before the lock goes: the next replica to count sees this one's new sandbox (a
            // refusal changed nothing).
            await publish(tenant)
            return made
        }
    }

    /// Publishes this replica's count of `tenant`'s sandboxes (`published`) for the other
    /// replicas, after a create or a removal; a count that could not be taken or published
    /// waits for the next refresh.
    package func publish(_ tenant: TenantID) async {
        guard let tallies, tenant != .local, let count = try? await published(tenant) else { return }
        try? await tallies.publish(replica: replica, tenant: tenant, count: count)
    }

    private func admitHere<T: Sendable>(
        _ key: Key, limit: Int, current: () async throws -> Int, _ body: @Sendable () async throws -> T
    ) async throws -> T {
        let inFlight = pending[key, default: 0]
        pending[key] = inFlight + 1
        defer { pending[key, default: 1] -= 1 }
        let existing = try await current()
        // Re-read after the await: other admissions may have started meanwhile.
        guard existing + pending[key, default: 1] - 1 < limit else {
            throw CorralError(
                .quotaExceeded, "tenant '\(key.tenant)' has reached its quota of \(limit) \(key.kind.rawValue)",
                hint: "remove some first, or raise the limit in corral.toml ([limits])")
        }
        return try await body()
    }
}
