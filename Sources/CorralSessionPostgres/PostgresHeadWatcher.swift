import CorralCore
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// Live tails across processes: one connection per store LISTENs on the store's channel,
/// where committers notify `session head` once their appends are in (`notify(_:)`). Waiters register before they
/// read the head, so that a notification between the read and the wait is not lost; when the
/// connection drops, every waiter is woken to read again (and the next wait reconnects, or
/// fails with `.unavailable` while the database is down).
final class PostgresHeadWatcher: Sendable {
    let channel: String
    private let connections: PostgresConnections
    private let logger: Logger
    private let state = Mutex(State())
    private let connecting = Mutex<Task<Void, any Error>?>(nil)

    private struct State: ~Copyable {
        var connection: PostgresConnection?
        var closed = false
    }

    /// The longest a waiter goes without reading the head itself.
    let poll: Duration = .seconds(2)

    init(channel: String, connections: PostgresConnections, logger: Logger) {
        self.channel = channel
        self.connections = connections
        self.logger = logger
    }

    /// A one-shot wake-up, safe to resume before it is awaited.
    final class AsyncWaiter: Sendable {
        private enum State {
            case idle
            case waiting(CheckedContinuation<Void, Never>)
            case woken
        }
        private let state = Mutex(State.idle)

        func wake() {
            let continuation = state.withLock { state -> CheckedContinuation<Void, Never>? in
                switch state {
                case .waiting(let continuation):
                    state = .woken
                    return continuation
                case .idle:
                    state = .woken
                    return nil
                case .woken:
                    return nil
                }
            }
            continuation?.resume()
        }

        func wait() async {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> Bool in
                    if case .woken = state { return true }
                    state = .waiting(continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        }
    }

    private let registry = Mutex<[SessionID: [UInt64: (beyond: UInt64, waiter: AsyncWaiter)]]>([:])
    private let tokens = Atomic<UInt64>(0)

    /// Waits until a notification names `session` with a head beyond `seq`, or the listener's
    /// connection changed; `readHead` is called once listening is sure, to catch what happened
    /// before. Returns the head when it is known to be beyond `seq`, nil to read again.
    func waitOnce(
        _ session: SessionID, beyond seq: UInt64, readHead: () async throws -> UInt64
    ) async throws -> UInt64? {
        let waiter = AsyncWaiter()
        let token = tokens.add(1, ordering: .relaxed).oldValue
        registry.withLock { $0[session, default: [:]][token] = (seq, waiter) }
        defer { registry.withLock { $0[session]?[token] = nil } }
        try await ensureListening()
        let head = try await readHead()
        if head > seq { return head }
        // A notification is sent after the appends commit; a writer that died in between
        // sent none, so the head is read again after `poll` at the latest.
        let poll = self.poll
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await waiter.wait()
                } onCancel: {
                    waiter.wake()
                }
            }
            group.addTask { try? await Task.sleep(for: poll) }
            await group.next()
            group.cancelAll()
        }
        try Task.checkCancellation()
        return nil
    }

    /// Tells every store on the database that these sessions' heads moved: a NOTIFY sent on
    /// this store's listening connection (made now when there is none), not waited for. A
    /// lost one costs a tail at most `poll`.
    func notify(_ heads: [String: Int64]) async {
        _ = try? await sendNotification(heads)
    }

    /// `notify(_:)`'s NOTIFY, sent on the listening connection after everything sent there
    /// before; the future answers when the server has run it. Throws when there is no
    /// listening connection to send it on.
    func sendNotification(_ heads: [String: Int64]) async throws -> EventLoopFuture<PostgresQueryResult> {
        try await ensureListening()
        guard let connection = state.withLock({ $0.connection }), !connection.isClosed else {
            throw CorralError(.unavailable, "the session store's listening connection closed")
        }
        let sessions = Array(heads.keys)
        let values = sessions.map { heads[$0] ?? 0 }
        let query: PostgresQuery = "SELECT notify_heads(\(channel), \(sessions), \(values))"
        return connection.query(query, logger: logger)
    }

    private func ensureListening() async throws {
        if state.withLock({ $0.connection.map { !$0.isClosed } ?? false }) { return }
        let task = connecting.withLock { current -> Task<Void, any Error> in
            if let current { return current }
            let task = Task { try await self.listen() }
            current = task
            return task
        }
        defer { connecting.withLock { if $0 == task { $0 = nil } } }
        try await task.value
    }

    private func listen() async throws {
        if state.withLock({ $0.connection.map { !$0.isClosed } ?? false }) { return }
        if state.withLock({ $0.closed }) {
            throw CorralError(.cancelled, "the session store at \(connections.url) was shut down")
        }
        let connection = try await connections.connect()
        let channel = self.channel
        connection.addListener(channel: channel) { [weak self] _, notification in
            self?.notified(notification.payload)
        }
        do {
            // This connection's own transactions are the NOTIFYs that wake tails. A NOTIFY
            // takes a transaction id, so with synchronous_commit on each one waited for a WAL
            // flush of its own: a second fsync for every append. Nothing is lost without it
            // (notifications do not outlive a crash, and tails read the rows themselves).
            try await connection.query("SET synchronous_commit = off", logger: logger)
            // The LISTEN goes out ahead of this query on the same connection: once it answers,
            // every later notification reaches the handler above.
            let query: PostgresQuery = "SELECT pg_listening_channels()"
            let listening = try await connection.rows(query, logger: logger).decode(String.self).gather()
            guard listening.contains(channel) else {
                try? await connection.close()
                throw CorralError(.internalError, "LISTEN \(channel) did not take effect on the session store")
            }
        } catch let error as CorralError {
            throw error
        } catch {
            try? await connection.close()
            throw PostgresStoreError.map(error, url: connections.url, doing: "listening for appends")
        }
        connection.closeFuture.whenComplete { [weak self] _ in self?.lost(connection) }
        let stale = state.withLock { state -> PostgresConnection? in
            defer { state.connection = connection }
            return state.connection
        }
        if let stale { try? await stale.close() }
    }

    private func notified(_ payload: String) {
        let parts = payload.split(separator: " ")
        guard parts.count == 2, let session = SessionID(String(parts[0])), let head = UInt64(parts[1]) else {
            wakeAll()
            return
        }
        let ready = registry.withLock { registry -> [AsyncWaiter] in
            guard let waiters = registry[session] else { return [] }
            return waiters.values.filter { $0.beyond < head }.map(\.waiter)
        }
        for waiter in ready { waiter.wake() }
    }

    private func lost(_ connection: PostgresConnection) {
        let current = state.withLock { state -> Bool in
            guard state.connection === connection else { return false }
            state.connection = nil
            return true
        }
        if current { wakeAll() }
    }

    private func wakeAll() {
        let all = registry.withLock { $0.values.flatMap { $0.values.map(\.waiter) } }
        for waiter in all { waiter.wake() }
    }

    deinit {
        if let connection = state.withLock({ $0.connection }) { PostgresConnections.closeDetached(connection) }
    }

    func shutdown() async {
        let connection = state.withLock { state -> PostgresConnection? in
            state.closed = true
            defer { state.connection = nil }
            return state.connection
        }
        if let connection { try? await connection.close() }
        wakeAll()
    }
}
