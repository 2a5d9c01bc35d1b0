import CorralCore

/// Who runs which session's harness, when several service replicas share one store: a lease
/// per session with an owner, an epoch and an expiry. The owner renews it while the run goes
/// on; a replica that dies stops renewing, and once the lease has expired another replica
/// claims it (`claimExpired`) and wakes the session. The session's own lease (`wake`) fences
/// the old owner's writes, so even a replica that comes back from a long pause writes nothing
/// more.
///
/// The PostgreSQL store keeps these in a table; the file store, which one process owns, has
/// none (runs are that process's own).
public protocol RunLeases: Sendable {
    /// Takes the run of `session` for `owner`, unless another owner's lease is live.
    func claim(_ session: SessionID, tenant: TenantID, owner: String, ttl: Duration) async throws -> RunClaim

    /// Keeps the lease for `ttl` more. Says so when it was taken over, or when a stop was
    /// asked for (through any replica).
    func renew(_ session: SessionID, owner: String, epoch: Int64, ttl: Duration) async throws -> RunRenewal

    /// Gives the lease up: the run ended, or (`handOver`) this replica is stopping while the
    /// run was not done, so that another takes it at once.
    func release(_ session: SessionID, owner: String, epoch: Int64, handOver: Bool) async throws

    /// Asks the owner of a live run to stop it, at its next renewal. A run whose owner is gone
    /// ends at once, and is not taken over. Returns the owner asked, or nil when none ran.
    func requestStop(_ session: SessionID) async throws -> String?

    /// Takes over up to `limit` runs whose owners stopped renewing: each row is claimed by
    /// exactly one caller, however many replicas ask at once.
    func claimExpired(owner: String, ttl: Duration, limit: Int) async throws -> [ClaimedRun]

    /// The lease of `session`, if any run was ever started for it.
    func lease(_ session: SessionID) async throws -> RunLease?
}

public enum RunClaim: Sendable, Hashable {
    case granted(epoch: Int64)
    case held(by: String)
}

public enum RunRenewal: Sendable, Hashable {
    case renewed
    case stopRequested
    /// Another owner holds the lease now.
    case lost
}

public struct ClaimedRun: Sendable, Hashable {
    public var session: SessionID
    public var tenant: TenantID
    public var epoch: Int64

    public init(session: SessionID, tenant: TenantID, epoch: Int64) {
        self.session = session
        self.tenant = tenant
        self.epoch = epoch
    }
}

public struct RunLease: Sendable, Hashable {
    public enum State: String, Sendable {
        case running, stopping, ended
    }

    public var owner: String
    public var epoch: Int64
    public var state: State
    /// Whether its owner stopped renewing it.
    public var expired: Bool

    public init(owner: String, epoch: Int64, state: State, expired: Bool) {
        self.owner = owner
        self.epoch = epoch
        self.state = state
        self.expired = expired
    }
}
