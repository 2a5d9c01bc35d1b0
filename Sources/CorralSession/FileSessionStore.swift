import CorralCore
import Foundation
import Synchronization

/// The session store on local files: one directory per session under `directory`, holding
/// segment files of framed records, their sparse indexes, a lease file and a lock file.
/// The format is described in docs/session-store.md.
///
/// Any number of tasks may use one store, and any number of processes may share one
/// directory: appends and wakes of a session are serialised by an flock on its lock file,
/// readers take no lock at all. Blocking work that can be slow (fdatasync, creating,
/// forking, opening and recovering a session) runs on the store's own threads, never on
/// Swift's cooperative pool; appends and reads themselves are page-cache writes and reads.
public final class FileSessionStore: SessionStore {
    public struct Configuration: Sendable {
        /// Largest event: id, type and JSON data together, once encoded.
        public var maxEventBytes: Int = 4 << 20
        /// Largest single append, all its events together.
        public var maxAppendBytes: Int = 64 << 20
        /// Size past which a new session's log continues in a new segment file. Recorded in
        /// each session at creation.
        public var segmentBytes: UInt64 = 64 << 20
        /// Zeros written ahead of the log's end by an `.fsync` append that reaches the end of
        /// the file. Later appends overwrite them, and an fdatasync of data written over
        /// allocated, already-written blocks has no metadata to flush (the file's size and
        /// block map stay put), which on ext4 here makes it about a third cheaper than one
        /// that extends the file. 0 turns it off. Cut back when a segment is sealed.
        public var runwayBytes: Int = 1 << 20
        /// Sessions kept open (each holds three to seven file descriptors); idle ones beyond
        /// this are closed, least recently used first.
        public var maxOpenSessions: Int = 64
        /// Threads for fdatasync and other blocking work. fdatasyncs of different sessions
        /// run at once on them, and file systems merge concurrent syncs into fewer flushes.
        public var blockingThreads: Int = 16
        /// Events in a page when the caller gives no limit.
        public var defaultPageSize: Int = 512
        /// A page stops growing once its records reach this many bytes.
        public var maxPageBytes: Int = 8 << 20

        public init() {}
    }

    public let directory: URL
    public let configuration: Configuration
    let root: String
    let workers: BlockingWorkers
    let watcher = DirectoryWatcher()
    private let handles = Mutex(HandleCache())

    struct HandleCache: ~Copyable {
        var open: [SessionID: SessionHandle] = [:]
        var order: [SessionID] = []

        mutating func touch(_ id: SessionID) {
            if let position = order.lastIndex(of: id) { order.remove(at: position) }
            order.append(id)
        }
    }

    /// `directory` holds one subdirectory per session; it is made on the first `create`.
    public init(directory: URL, configuration: Configuration = Configuration()) {
        self.directory = directory
        self.configuration = configuration
        var path = directory.path
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        self.root = path
        self.workers = BlockingWorkers(maxThreads: configuration.blockingThreads, name: "corral-session-io")
    }

    deinit {
        workers.shutdown()
        watcher.shutdown()
    }

    // MARK: SessionStore

    public func create(id: SessionID? = nil, tenant: TenantID = .local, metadata: [String: String] = [:]) async throws
        -> SessionInfo
    {
        try Self.check(metadata)
        // An id made with init(unchecked:) must not become a path outside the store.
        let id = try id.map { try SessionID(validating: $0.rawValue) } ?? SessionID.random()
        let manifest = SessionManifest(
            format: SessionManifest.currentFormat, id: id, tenant: tenant,
            created: Timestamp.format(nanoseconds: Timestamp.nowNanoseconds()),
            metadata: metadata, forkedFrom: nil, segmentBytes: configuration.segmentBytes)
        try await blocking { try self.install(manifest, epoch: 1) { _ in } }
        return SessionInfo(
            id: id, tenant: tenant, created: manifest.createdDate, metadata: metadata, forkedFrom: nil, head: 0,
            epoch: 1)
    }

    public func append(
        _ session: SessionID, _ events: [NewEvent], expectedSeq: UInt64? = nil, lease: Lease,
        durability: Durability = .fsync
    ) async throws -> AppendResult {
        guard lease.session == session else {
            throw CorralError(
                .invalidArgument, "the lease is for session \(lease.session), not \(session)",
                hint: "wake \(session) (or ask for its current lease) and append with that")
        }
        let handle = try await self.handle(session)
        let encoded = try handle.encode(events)
        let outcome: SessionHandle.WriteOutcome
        do {
            outcome = try handle.writer.withLock { writer in
                try handle.withFileLock {
                    try handle.writeLocked(
                        encoded, expectedSeq: expectedSeq, lease: lease, durability: durability, writer: &writer)
                }
            }
        } catch let error as CorralError {
            if handle.writer.withLock({ $0.failure != nil }) { evict(session, handle) }
            throw error
        }
        var durable = false
        switch durability {
        case .fsync:
            do {
                try await handle.awaitDurable(outcome.events.last?.seq ?? outcome.head)
            } catch {
                evict(session, handle)
                throw error
            }
            durable = true
        case .groupCommit(let delay):
            if outcome.written > 0 { handle.scheduleFlush(within: delay) }
        case .none:
            break
        }
        return AppendResult(events: outcome.events, written: outcome.written, head: outcome.head, durable: durable)
    }

    public func readPage(_ session: SessionID, from: UInt64 = 1, limit: Int? = nil) async throws -> EventPage {
        if let limit, limit < 0 {
            throw CorralError(.invalidArgument, "a page limit cannot be negative (\(limit))")
        }
        let handle = try await self.handle(session)
        return try handle.readPage(
            from: from, limit: min(limit ?? configuration.defaultPageSize, 100_000),
            maxBytes: configuration.maxPageBytes)
    }

    public func session(_ id: SessionID) async throws -> SessionInfo {
        try await handle(id).info()
    }

    public func list() async throws -> [SessionInfo] {
        let names = try await blocking { try FileIO.list(self.root) }
        var sessions: [SessionInfo] = []
        for name in names.sorted() {
            guard let id = SessionID(name), FileIO.isDirectory(root + "/" + name) else { continue }
            do {
                sessions.append(try await session(id))
            } catch let error as CorralError {
                let manifest = try? SessionManifest.read(SessionPaths(root: root, id: id), id: id)
                sessions.append(
                    SessionInfo(
                        id: id, tenant: manifest?.tenant ?? .local,
                        created: manifest?.createdDate ?? Date(timeIntervalSince1970: 0),
                        metadata: manifest?.metadata ?? [:], forkedFrom: manifest?.forkedFrom, head: 0, epoch: 0,
                        problem: error.description))
            }
        }
        return sessions
    }

    public func wake(_ id: SessionID) async throws -> Lease {
        let handle = try await self.handle(id)
        return try await blocking {
            try handle.writer.withLock { writer in try handle.withFileLock { try handle.wakeLocked(&writer) } }
        }
    }

    public func currentLease(_ id: SessionID) async throws -> Lease {
        let handle = try await self.handle(id)
        return Lease(session: id, epoch: try handle.lock.epoch())
    }

    public func fork(_ id: SessionID, atSeq: UInt64, newID: SessionID? = nil) async throws -> SessionInfo {
        let newID = try newID.map { try SessionID(validating: $0.rawValue) } ?? SessionID.random()
        let parent = try await handle(id)
        return try await blocking { try self.fork(parent, atSeq: atSeq, newID: newID) }
    }

    /// Takes the session's directory out of place under its lock (so that no append is half
    /// way), into the staging area, then removes it. From the rename on, the session is gone
    /// for every process; one that dies before the removal leaves the staged copy, which
    /// `removeAbandoned` sweeps up. A process that still holds the session open writes on into
    /// the removed files and is refused at its next open.
    public func delete(_ id: SessionID) async throws {
        let handle = try await self.handle(id)
        let staging = root + "/.staging"
        let target = "\(staging)/\(id).\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        try await blocking {
            try FileIO.makeDirectories(staging)
            try handle.writer.withLock { _ in
                try handle.withFileLock {
                    do {
                        try FileIO.rename(handle.paths.directory, target)
                    } catch  where access(handle.paths.directory, F_OK) != 0 {
                        return  // deleted by another caller since it was found: it is gone either way
                    }
                    try FileIO.syncDirectory(self.root)
                }
            }
            FileIO.removeTree(target)
        }
        evict(id, handle)
    }

    public func sync(_ id: SessionID) async throws {
        let handle = try await self.handle(id)
        try await handle.awaitDurable(handle.head)
    }

    public func waitForHead(_ id: SessionID, beyond seq: UInt64) async throws -> UInt64 {
        try await handle(id).waitForHead(beyond: seq)
    }

    // MARK: Handles

    func handle(_ id: SessionID) async throws -> SessionHandle {
        if let cached = handles.withLock({ cache -> SessionHandle? in
            guard let handle = cache.open[id] else { return nil }
            cache.touch(id)
            return handle
        }) {
            return cached
        }
        let opened = try await blocking { try SessionHandle.open(id, store: self) }
        let (handle, evicted) = handles.withLock { cache -> (SessionHandle, [SessionHandle]) in
            if let raced = cache.open[id] {
                cache.touch(id)
                return (raced, [])
            }
            cache.open[id] = opened
            cache.touch(id)
            var evicted: [SessionHandle] = []
            var index = 0
            while cache.open.count > configuration.maxOpenSessions, index < cache.order.count {
                let candidate = cache.order[index]
                if candidate != id, let open = cache.open[candidate], open.isIdle {
                    cache.open[candidate] = nil
                    cache.order.remove(at: index)
                    evicted.append(open)
                } else {
                    index += 1
                }
            }
            return (opened, evicted)
        }
        _ = evicted  // closed when the last operation using them ends
        return handle
    }

    /// Drops a handle whose state can no longer be trusted; the next call reopens the session.
    func evict(_ id: SessionID, _ handle: SessionHandle) {
        handles.withLock { cache in
            if cache.open[id] === handle {
                cache.open[id] = nil
                cache.order.removeAll { $0 == id }
            }
        }
    }

    /// Runs blocking file work on the store's threads.
    func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            workers.submit { continuation.resume(with: Result { try body() }) }
        }
    }

    // MARK: Creating sessions

    static func check(_ metadata: [String: String]) throws {
        guard metadata.count <= 64 else {
            throw CorralError(.invalidArgument, "a session takes at most 64 metadata entries, not \(metadata.count)")
        }
        for (key, value) in metadata {
            guard !key.isEmpty, key.utf8.count <= 128, !key.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) else {
                throw CorralError(
                    .invalidArgument, "invalid metadata key '\(key.prefix(60))'",
                    hint: "keys are 1-128 bytes without control characters")
            }
            guard value.utf8.count <= 4096 else {
                throw CorralError(.invalidArgument, "metadata value of '\(key)' is over 4096 bytes")
            }
        }
    }

    /// Builds a session directory under a staging name, makes every file in it durable, then
    /// renames it into place (refusing to replace one): a session exists whole or not at all.
    func install(_ manifest: SessionManifest, epoch: UInt64, populate: (SessionPaths) throws -> Void) throws {
        let staging = root + "/.staging"
        // Sessions are for the service's eyes only: an older corral made this 0755.
        try PrivateDirectory.make(URL(fileURLWithPath: root))
        try FileIO.makeDirectories(staging)
        Self.removeAbandoned(in: staging)
        let temporary = SessionPaths(
            directory: "\(staging)/\(manifest.id).\(getpid()).\(UInt32.random(in: 0...UInt32.max))")
        try FileIO.makeDirectory(temporary.directory)
        do {
            try Self.writeDurably(try manifest.encoded(), to: temporary.manifest)
            let lease = LeaseRecord(
                format: 1, session: manifest.id, epoch: epoch,
                since: Timestamp.format(nanoseconds: Timestamp.nowNanoseconds()))
            try Self.writeDurably(try lease.encoded(), to: temporary.lease)
            try Self.writeDurably(SessionLock.encode(epoch: epoch), to: temporary.lock)
            try populate(temporary)
            try FileIO.syncDirectory(temporary.directory)
            let target = root + "/" + manifest.id.rawValue
            guard try FileIO.renameNoReplace(temporary.directory, target) else {
                throw CorralError(
                    .alreadyExists, "session \(manifest.id) already exists in \(root)",
                    hint: "choose another id, or leave it out to get a new one")
            }
            try FileIO.syncDirectory(root)
        } catch {
            FileIO.removeTree(temporary.directory)
            throw error
        }
    }

    /// Staging directories (`<id>.<pid>.<random>`) of creates and forks whose process died
    /// before the rename: nothing refers to them.
    static func removeAbandoned(in staging: String) {
        for name in (try? FileIO.list(staging)) ?? [] {
            let parts = name.split(separator: ".")
            guard parts.count == 3, let pid = pid_t(parts[1]), pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { FileIO.removeTree(staging + "/" + name) }
        }
    }

    static func writeDurably(_ bytes: [UInt8], to path: String) throws {
        let fd = try FileIO.open(path, O_WRONLY | O_CREAT | O_EXCL, operation: "create")
        defer { close(fd) }
        try FileIO.pwrite(fd, bytes, at: 0, path: path)
        try FileIO.syncAll(fd, path: path)
    }
}
