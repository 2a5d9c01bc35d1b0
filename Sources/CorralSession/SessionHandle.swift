import CorralCore
import Foundation
import Synchronization

/// One open session: its files, what readers may see of its log, and the state its writers
/// share. The store keeps a bounded cache of these.
///
/// Locks, always taken in this order and never across an `await`:
/// - `writer`: serialises this process's appends and wakes of the session; held together
///   with the flock on the `lock` file, which serialises them with other processes.
/// - `view`: what readers see (segments, head, end of the active segment); held only to
///   copy or publish a few fields, so readers never wait for a write to finish.
/// - `sealed`, `sync`: caches and durability bookkeeping; short sections.
final class SessionHandle: Sendable {
    let id: SessionID
    let paths: SessionPaths
    let manifest: SessionManifest
    let lock: SessionLock
    let limits: FileSessionStore.Configuration
    let workers: BlockingWorkers
    let watcher: DirectoryWatcher
    let idSeeds: Mutex<SplitMix64>

    let writer = Mutex(WriterState())
    let view = Mutex(LogView())
    let sealed = Mutex(SealedCache())
    let syncState = Mutex(SyncState())

    struct WriterState {
        /// The active segment's index file, and how many of `LogView.activeIndex` it holds.
        var indexFile: OpenFile?
        var indexFileFirst: UInt64 = 0
        var persistedEntries = 0
        /// The size of the active segment's file (runway included) when this handle knows
        /// it, with the first seq of the segment it belongs to: a reader may have moved the
        /// view on to a segment another process started.
        var activeSize: (first: UInt64, size: UInt64)?
        /// Set when the files may no longer match what this handle believes (a failed
        /// fdatasync, a failed roll-back); the store then drops the handle and reopens.
        var failure: CorralError?
    }

    struct LogView {
        /// First seqs of all segments, ascending; the last one is `active`.
        var segments: [UInt64] = []
        var active: OpenFile?
        /// End of the last whole record in `active`.
        var activeEnd: UInt64 = 0
        var activeIndex: [IndexEntry] = []
        var head: UInt64 = 0
        var waiters: [ObjectIdentifier: HeadWaiter] = [:]
    }

    struct SealedSegment {
        /// Nil once the cache has closed the file to stay within its descriptor budget.
        var file: OpenFile?
        let size: UInt64
        var index: [IndexEntry]
    }

    /// Sealed segments read lately: the indexes of the last 64 (a few kilobytes each), the
    /// open files of the last 8, so that random reads across a long session neither reload
    /// indexes nor hold a descriptor per segment.
    struct SealedCache {
        var segments: [UInt64: SealedSegment] = [:]
        var order: [UInt64] = []
        static let openFiles = 8
        static let indexes = 64

        mutating func touch(_ first: UInt64) {
            order.removeAll { $0 == first }
            order.append(first)
        }

        mutating func insert(_ first: UInt64, _ segment: SealedSegment) {
            segments[first] = segment
            touch(first)
            if order.count > Self.openFiles { segments[order[order.count - Self.openFiles - 1]]?.file = nil }
            while order.count > Self.indexes {
                segments[order.removeFirst()] = nil
            }
        }
    }

    private init(
        id: SessionID, paths: SessionPaths, manifest: SessionManifest, lock: SessionLock, store: FileSessionStore
    ) {
        self.id = id
        self.paths = paths
        self.manifest = manifest
        self.lock = lock
        self.limits = store.configuration
        self.workers = store.workers
        self.watcher = store.watcher
        self.idSeeds = Mutex(SplitMix64(seed: UInt64.random(in: 0...UInt64.max)))
    }

    /// Opens a session: reads its manifest, and under the flock brings the log to a
    /// consistent end (cutting a torn tail, refusing damage followed by intact records).
    static func open(_ id: SessionID, store: FileSessionStore) throws -> SessionHandle {
        let paths = SessionPaths(root: store.root, id: id)
        guard FileIO.isDirectory(paths.directory) else {
            throw CorralError(
                .notFound, "no session \(id) in \(store.root)", hint: "list sessions with `corral session ls`")
        }
        let manifest = try SessionManifest.read(paths, id: id)
        let lock = try SessionLock(path: paths.lock)
        let handle = SessionHandle(id: id, paths: paths, manifest: manifest, lock: lock, store: store)
        try handle.writer.withLock { writer in
            try handle.withFileLock { try handle.recoverAtOpen(&writer) }
        }
        return handle
    }

    func withFileLock<T>(_ body: () throws -> T) throws -> T {
        try FileIO.lock(lock.file.fd, path: lock.file.path)
        defer { FileIO.unlock(lock.file.fd) }
        return try body()
    }

    var isIdle: Bool {
        view.withLock { $0.waiters.isEmpty } && syncState.withLock { $0.isIdle }
    }

    var head: UInt64 { view.withLock { $0.head } }

    func info() throws -> SessionInfo {
        try advance(recover: false)
        return SessionInfo(
            id: id, tenant: manifest.tenant, created: manifest.createdDate, metadata: manifest.metadata,
            forkedFrom: manifest.forkedFrom, head: head, epoch: try lock.epoch())
    }

    func corrupted(_ what: String, file: String, offset: UInt64, expectedSeq: UInt64) -> CorralError {
        CorralError(
            .corrupted,
            "session \(id): record at byte \(offset) of \(file) (seq \(expectedSeq) expected) \(what)",
            hint:
                "events before seq \(expectedSeq) can still be read and nothing was truncated; copy \(paths.directory) aside before any repair"
        )
    }

    // MARK: Waiting for the head to move

    final class HeadWaiter: Sendable {
        let beyond: UInt64
        private let state = Mutex<State>(.waiting(nil))

        enum State {
            case waiting(CheckedContinuation<UInt64, any Error>?)
            case finished
        }

        init(beyond: UInt64) { self.beyond = beyond }

        /// Returns false when the waiter was already finished (cancelled first).
        func install(_ continuation: CheckedContinuation<UInt64, any Error>) -> Bool {
            state.withLock { state in
                guard case .waiting = state else { return false }
                state = .waiting(continuation)
                return true
            }
        }

        func finish(_ result: Result<UInt64, any Error>) {
            let continuation: CheckedContinuation<UInt64, any Error>?? = state.withLock { state in
                guard case .waiting(let continuation) = state else { return nil }
                state = .finished
                return continuation
            }
            if case .some(.some(let continuation)) = continuation { continuation.resume(with: result) }
        }
    }

    func waitForHead(beyond seq: UInt64) async throws -> UInt64 {
        let current = head
        if current > seq { return current }
        let directory = paths.directory
        let watching = watcher.retain(directory) { [weak self] in try? self?.advance(recover: false) }
        defer { if watching { watcher.release(directory) } }
        try advance(recover: false)
        let waiter = HeadWaiter(beyond: seq)
        let key = ObjectIdentifier(waiter)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<UInt64, any Error>) in
                guard waiter.install(continuation) else {
                    continuation.resume(throwing: CancellationError())
                    return
                }
                let ready: UInt64? = view.withLock { view in
                    if view.head > seq { return view.head }
                    view.waiters[key] = waiter
                    return nil
                }
                if let ready { waiter.finish(.success(ready)) }
            }
        } onCancel: {
            _ = view.withLock { $0.waiters.removeValue(forKey: key) }
            waiter.finish(.failure(CancellationError()))
        }
    }
}
