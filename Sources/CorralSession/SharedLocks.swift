import CorralCore

/// Locks that hold across processes sharing a store (replicas): a section under
/// `withLock(name)` runs in one process at a time. The PostgreSQL store's are advisory locks
/// on a connection of their own, released when the section ends or the process dies.
public protocol SharedLocks: Sendable {
    func withLock<T: Sendable>(
        _ name: String, isolation: isolated (any Actor)?, _ body: () async throws -> T
    ) async throws -> T
}
