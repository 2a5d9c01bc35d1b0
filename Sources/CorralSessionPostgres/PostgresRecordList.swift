import CorralCore
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// A `RecordList` kept in the store's database: one row of `record_lists`, its body the list
/// as JSON and a version that each change raises. A change locks the row (`FOR UPDATE`) for
/// its read-modify-write, so changes from any replica line up. A read asks for the version
/// every time, and for the body only when the version moved since the last read: a token
/// another replica removed is refused at the next request, for one round trip per read.
public final class PostgresRecordList<Element: Codable & Sendable>: RecordList, Sendable {
    public let name: String
    private let connections: PostgresConnections
    private let logger: Logger
    private let cache = Mutex<(version: Int64, elements: [Element])>((-1, []))

    init(name: String, connections: PostgresConnections, logger: Logger) {
        self.name = name
        self.connections = connections
        self.logger = logger
    }

    public var location: String { "\(connections.url) (list \(name))" }

    public func load() async throws -> [Element] {
        let known = cache.withLock { $0.version }
        let rows = try await connections.withConnection("reading \(name)") { connection in
            try await connection.rows(
                """
                SELECT version, CASE WHEN version = \(known) THEN NULL ELSE body END
                FROM record_lists WHERE name = \(name)
                """, logger: logger
            ).decode((Int64, String?).self).gather()
        }
        guard let (version, body) = rows.first else { return [] }
        guard let body else {
            if let cached = cache.withLock({ $0.version == version ? $0.elements : nil }) { return cached }
            return try await reread()
        }
        let elements = try decode(body)
        cache.withLock { if $0.version < version { $0 = (version, elements) } }
        return elements
    }

    /// The body whatever the cache holds: when another task replaced the cache between the
    /// version check and here.
    private func reread() async throws -> [Element] {
        let rows = try await connections.withConnection("reading \(name)") { connection in
            try await connection.rows("SELECT body FROM record_lists WHERE name = \(name)", logger: logger)
                .decode(String.self).gather()
        }
        return try rows.first.map(decode) ?? []
    }

    public func modify(_ change: (inout [Element]) throws -> Void) async throws {
        try await connections.withConnection("changing \(name)") { connection in
            try await connection.rows("BEGIN", logger: logger)
            do {
                try await connection.rows(
                    "INSERT INTO record_lists (name, body, version) VALUES (\(name), '[]', 0) ON CONFLICT (name) DO NOTHING",
                    logger: logger)
                let rows = try await connection.rows(
                    "SELECT version, body FROM record_lists WHERE name = \(name) FOR UPDATE", logger: logger
                ).decode((Int64, String).self).gather()
                guard let (version, body) = rows.first else {
                    throw CorralError(.internalError, "the row of list \(name) went missing in \(connections.url)")
                }
                var elements = try decode(body)
                try change(&elements)
                let encoded = try encode(elements)
                try await connection.rows(
                    "UPDATE record_lists SET body = \(encoded), version = \(version + 1) WHERE name = \(name)",
                    logger: logger)
                try await connection.rows("COMMIT", logger: logger)
                cache.withLock { if $0.version < version + 1 { $0 = (version + 1, elements) } }
            } catch {
                _ = try? await connection.rows("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    private func decode(_ body: String) throws -> [Element] {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode([Element].self, from: Data(body.utf8))
        } catch {
            throw CorralError(
                .corrupted, "list \(name) in the store at \(connections.url) is not valid",
                hint: "restore it from a backup", underlying: error)
        }
    }

    private func encode(_ elements: [Element]) throws -> String {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(elements), as: UTF8.self)
    }
}

extension PostgresSessionStore {
    /// The list `name` in this store's database (tenants, worker tokens): shared by every
    /// process that opens the same store.
    public func recordList<Element: Codable & Sendable>(_ name: String, of: Element.Type = Element.self)
        -> PostgresRecordList<Element>
    {
        PostgresRecordList(name: name, connections: connections, logger: logger)
    }
}
