import CorralCore
import CorralSession
import Logging
import PostgresNIO

/// `SharedLocks` as PostgreSQL advisory locks, each on a connection opened for it (so that a
/// section holding a lock never waits for a pooled connection another holder has), closed
/// when the section ends: a process that dies holding one releases it with its connection.
public struct PostgresSharedLocks: SharedLocks {
    let connections: PostgresConnections
    let logger: Logger

    public func withLock<T: Sendable>(
        _ name: String, isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> T
    ) async throws -> T {
        let connection = try await connections.connect()
        do {
            try await connection.rows("SELECT pg_advisory_lock(hashtext(\(name)))", logger: logger)
        } catch {
            try? await connection.close()
            throw PostgresStoreError.map(error, url: connections.url, doing: "taking lock \(name)")
        }
        do {
            let value = try await body()
            try? await connection.close()
            return value
        } catch {
            try? await connection.close()
            throw error
        }
    }
}

extension PostgresSessionStore {
    public var sharedLocks: PostgresSharedLocks { PostgresSharedLocks(connections: connections, logger: logger) }
}
