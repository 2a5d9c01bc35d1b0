import CorralCore
import CorralGateway
import CorralSession
import CorralSessionPostgres
import Crypto
import Foundation
import Logging

/// `corral store copy`: moves what a store holds (sessions with every event, tenants, worker
/// tokens) from one store to another, files or PostgreSQL either way, then reads both back
/// and compares counts and checksums.
///
/// Sessions keep their ids, tenants, creation times, metadata, fork origins and epochs, and
/// their events keep seqs, ids, types, times (to the microsecond, as both stores keep them),
/// epochs and data byte for byte. A copy run again skips what is already there, so an
/// interrupted copy is finished by running it again; a target that holds something else
/// under the same id or name is refused, naming it. Run it with the services on both stores
/// stopped: what is written during a copy may be missed, and the check says so.
public enum StoreCopy {
    /// Where a store is: a state directory (`file:DIR`: `DIR/sessions`, `DIR/tenants.json`,
    /// `DIR/worker-tokens.json`) or a PostgreSQL URL.
    public enum Location: Sendable, CustomStringConvertible {
        case files(URL)
        case postgres(String)

        public init(parsing text: String) throws {
            if text.hasPrefix("file:") {
                let path = String(text.dropFirst("file:".count))
                guard !path.isEmpty else {
                    throw CorralError.invalidArgument("'file:' needs a state directory", hint: "file:/var/lib/corral")
                }
                self = .files(URL(fileURLWithPath: path).standardizedFileURL)
            } else if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
                _ = try PostgresStoreURL(parsing: text)
                self = .postgres(text)
            } else {
                throw CorralError.invalidArgument(
                    "'\(PostgresStoreURL.redact(text).prefix(100))' is not a store",
                    hint: "name a state directory as file:DIR, or a database as postgres://USER:PASSWORD@HOST/DB")
            }
        }

        /// Without the password.
        public var description: String {
            switch self {
            case .files(let directory): "file:\(directory.path)"
            case .postgres(let url): PostgresStoreURL.redact(url)
            }
        }

        /// The list `name` of `store`, opened here: a file of the state directory, or a row of
        /// the database.
        func list(_ name: String, what: String, store: any SessionStore) throws -> any RecordList<JSONValue> {
            switch self {
            case .files(let directory):
                return LockedJSONFile(file: directory.appendingPathComponent("\(name).json"), what: what)
            case .postgres:
                guard let store = store as? PostgresSessionStore else {
                    throw CorralError(.internalError, "\(self) was opened as another kind of store")
                }
                return store.recordList(name, of: JSONValue.self)
            }
        }

        /// The sealed vault: `DIR/vault.sealed`, or the database's row.
        func vault(store: any SessionStore) throws -> any VaultStorage {
            switch self {
            case .files(let directory):
                return VaultFile(file: directory.appendingPathComponent("vault.sealed"))
            case .postgres:
                guard let storage = SessionStoreSelection.vaultStorage(store) else {
                    throw CorralError(.internalError, "\(self) was opened as another kind of store")
                }
                return storage
            }
        }

        /// Opens the store; a target state directory is made when missing.
        func open(asTarget: Bool, logger: Logger) async throws -> any SessionImporting {
            switch self {
            case .files(let directory):
                if asTarget {
                    try PrivateDirectory.make(directory)
                } else if !FileManager.default.fileExists(atPath: directory.path) {
                    throw CorralError.notFound("no state directory \(directory.path)")
                }
                return FileSessionStore(directory: directory.appendingPathComponent("sessions", isDirectory: true))
            case .postgres(let url):
                return try await PostgresSessionStore.connect(url: url, logger: logger)
            }
        }
    }

    public struct Report: Codable, Sendable, Hashable {
        public var sessions = 0
        public var events: UInt64 = 0
        /// Sessions that were there whole already (a copy run again).
        public var alreadyThere = 0
        public var tenants = 0
        public var workerTokens = 0
        /// Whether the source has a sealed vault (copied as it is: the target opens it with the
        /// source's key).
        public var vault = false
        /// Every session's count and checksum, and every list entry, were read back alike.
        public var verified = false
    }

    /// The lists copied beside the sessions, by their names in `SessionStoreSelection`.
    static let lists = [("tenants", "tenants file"), ("worker-tokens", "worker tokens file")]

    public static func run(
        from source: Location, to target: Location, logger: Logger, progress: (String) -> Void = { _ in }
    ) async throws -> Report {
        guard source.description != target.description else {
            throw CorralError.invalidArgument(
                "the source and the target are the same store (\(source))",
                hint: "name another state directory or database")
        }
        let from = try await source.open(asTarget: false, logger: logger)
        let to: any SessionImporting
        do {
            to = try await target.open(asTarget: true, logger: logger)
        } catch {
            await SessionStoreSelection.close(from)
            throw error
        }
        do {
            let report = try await copy(from: (from, source), to: (to, target), progress: progress)
            await SessionStoreSelection.close(from)
            await SessionStoreSelection.close(to)
            return report
        } catch {
            await SessionStoreSelection.close(from)
            await SessionStoreSelection.close(to)
            throw error
        }
    }

    static func copy(
        from: (store: any SessionImporting, location: Location), to: (store: any SessionImporting, location: Location),
        progress: (String) -> Void
    ) async throws -> Report {
        let (source, target) = (from.location, to.location)
        let (from, to) = (from.store, to.store)
        var report = Report()

        // The lists first: a tenant is there before its sessions are.
        for (name, what) in lists {
            let count = try await copyList(
                name, from: source.list(name, what: what, store: from), to: target.list(name, what: what, store: to))
            if name == "tenants" { report.tenants = count } else { report.workerTokens = count }
        }
        report.vault = try await copyVault(from: source.vault(store: from), to: target.vault(store: to))
        let sessions = try await from.list().sorted { $0.id.rawValue < $1.id.rawValue }
        for info in sessions {
            let copied = try await copySession(info, from: from, to: to)
            report.sessions += 1
            report.events += info.head
            if !copied { report.alreadyThere += 1 }
            if report.sessions % 100 == 0 { progress("\(report.sessions) of \(sessions.count) sessions copied") }
        }

        // Read both back.
        for info in sessions {
            let (sourceHead, sourceSum) = try await checksum(info.id, in: from)
            let (targetHead, targetSum) = try await checksum(info.id, in: to)
            let copiedInfo = try await to.session(info.id)
            guard sourceHead == targetHead, sourceSum == targetSum, Self.sameHeader(info, copiedInfo) else {
                throw CorralError(
                    .corrupted,
                    "session \(info.id) differs after the copy: \(sourceHead) events in \(source), \(targetHead) in \(target)",
                    hint: "stop every service on both stores and copy again; the copy skips what matches")
            }
        }
        for (name, what) in lists {
            let source = try await source.list(name, what: what, store: from).load()
            let copied = Set(try await target.list(name, what: what, store: to).load())
            guard source.allSatisfy(copied.contains) else {
                throw CorralError(.corrupted, "the \(name) list differs after the copy")
            }
        }
        guard try await source.vault(store: from).read() == target.vault(store: to).read() else {
            throw CorralError(.corrupted, "the vault differs after the copy")
        }
        report.verified = true
        return report
    }

    /// Makes the session in the target if it is not there, then appends its events from where
    /// the target's copy ends. Returns false when the target had it whole already.
    static func copySession(_ info: SessionInfo, from: any SessionImporting, to: any SessionImporting) async throws
        -> Bool
    {
        var existing: SessionInfo?
        do {
            existing = try await to.session(info.id)
        } catch let error as CorralError where error.code == .notFound {
            existing = nil
        }
        if let existing {
            guard Self.sameHeader(info, existing) else {
                throw CorralError(
                    .alreadyExists, "session \(info.id) in the target is another session (tenant, creation or fork)",
                    hint: "copy into an empty store, or remove that session there first")
            }
        } else {
            try await to.importSession(info)
        }
        let have = existing?.head ?? 0
        guard have < info.head else { return existing == nil }
        // From the first event the target may have (its last one, to check the ids line up).
        var next = max(1, have)
        while next <= info.head {
            let page = try await from.readPage(info.id, from: next, limit: 512)
            let events = page.events.filter { $0.seq <= info.head }
            guard !events.isEmpty else { break }
            try await to.importEvents(info.id, events)
            next = events[events.count - 1].seq + 1
        }
        return true
    }

    /// What must match besides the events: the head is left out (it grows while copying).
    static func sameHeader(_ one: SessionInfo, _ other: SessionInfo) -> Bool {
        one.id == other.id && one.tenant == other.tenant && one.metadata == other.metadata
            && Timestamp.nanoseconds(one.created) == Timestamp.nanoseconds(other.created)
            && one.forkedFrom == other.forkedFrom
    }

    /// The number of events and a SHA-256 over each one's seq, id, type, time (microseconds),
    /// epoch and exact data, in order.
    static func checksum(_ id: SessionID, in store: any SessionStore) async throws -> (UInt64, String) {
        var hash = SHA256()
        var count: UInt64 = 0
        for try await event in store.read(id) {
            count += 1
            let line =
                "\(event.seq)\t\(event.id)\t\(event.type)\t\(Timestamp.nanoseconds(event.time) / 1000)\t\(event.epoch)\t"
            hash.update(data: Data(line.utf8))
            hash.update(data: JSONCodec.encode(event.data))
            hash.update(data: Data([0x0A]))
        }
        return (count, hash.finalize().map { String(format: "%02x", $0) }.joined())
    }

    /// Copies the sealed vault as it is, never opened (the copy needs no key); a target with
    /// another vault of its own is refused before anything is written. Returns whether the
    /// source has one.
    static func copyVault(from source: any VaultStorage, to target: any VaultStorage) async throws -> Bool {
        guard let sealed = try await source.read() else { return false }
        try await target.modify { present in
            guard let present else { return sealed }
            guard present == sealed else {
                throw CorralError(
                    .alreadyExists, "the target has a vault of its own (\(target.location))",
                    hint: "move its credentials by hand (`corral vault put`), or copy into a store without a vault")
            }
            return nil
        }
        return true
    }

    /// Adds the source's entries the target lacks; an entry of the same id that differs is
    /// refused before anything is written. Returns how many entries the source has.
    static func copyList(
        _ name: String, from source: any RecordList<JSONValue>, to target: any RecordList<JSONValue>
    ) async throws -> Int {
        let entries = try await source.load()
        guard !entries.isEmpty else { return 0 }
        try await target.modify { existing in
            for entry in entries {
                guard let id = entry["id"] else { continue }
                if let present = existing.first(where: { $0["id"] == id }) {
                    guard present == entry else {
                        throw CorralError(
                            .alreadyExists,
                            "the target's \(name) list has another entry '\(id.stringValue ?? "?")'",
                            hint: "remove it there first, or copy into an empty store")
                    }
                } else {
                    existing.append(entry)
                }
            }
        }
        return entries.count
    }
}
