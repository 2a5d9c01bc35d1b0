import Foundation

/// A bounded queue of byte chunks between a thread that may block and a Swift task that
/// must not, or between two tasks. Blocking code (libarchive) reads or writes on its own
/// thread; async code (an HTTP body) is on the other side. Either side can finish the stream, with or without an
/// error; the reader sees the error after the chunks sent before it.
public final class ByteChannel: @unchecked Sendable {
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var chunks: [[UInt8]] = []
    private var buffered = 0
    private var finished = false
    private var failure: (any Error)?
    private var cancelled = false
    private var receiver: CheckedContinuation<[UInt8]?, any Error>?
    private var sender: CheckedContinuation<Void, any Error>?
    /// Bytes held before a sender waits.
    public let capacity: Int

    public init(capacity: Int = 1 << 20) {
        self.capacity = capacity
    }

    // MARK: Blocking side (threads of your own only)

    /// Queues `bytes`, blocking while the queue is full. Throws once the reader has gone.
    public func blockingSend(_ bytes: [UInt8]) throws {
        guard !bytes.isEmpty else { return }
        condition.lock()
        while buffered >= capacity && !cancelled { condition.wait() }
        if cancelled {
            condition.unlock()
            throw CorralError(.cancelled, "the reader of this stream has gone")
        }
        let waiting = deliverOrQueue(bytes)
        condition.unlock()
        waiting?.resume(returning: bytes)
    }

    /// The next chunk, blocking until one comes; nil at the end.
    public func blockingReceive() throws -> [UInt8]? {
        condition.lock()
        while chunks.isEmpty && !finished && !cancelled { condition.wait() }
        defer { condition.unlock() }
        if !chunks.isEmpty { return takeAll() }
        if cancelled { throw CorralError(.cancelled, "the writer of this stream has gone") }
        if let failure { throw failure }
        return nil
    }

    // MARK: Async side

    /// Queues `bytes`, suspending while the queue is full.
    public func send(_ bytes: [UInt8]) async throws {
        guard !bytes.isEmpty else { return }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            condition.lock()
            if cancelled {
                condition.unlock()
                continuation.resume(throwing: CorralError(.cancelled, "the reader of this stream has gone"))
                return
            }
            if let waiting = deliverOrQueue(bytes) {
                condition.unlock()
                waiting.resume(returning: bytes)
                continuation.resume()
                return
            }
            if buffered >= capacity {
                sender = continuation
                condition.unlock()
            } else {
                condition.unlock()
                continuation.resume()
            }
        }
    }

    /// The next chunk; nil at the end.
    public func receive() async throws -> [UInt8]? {
        try await withCheckedThrowingContinuation { continuation in
            condition.lock()
            if !chunks.isEmpty {
                let chunk = takeAll()
                condition.unlock()
                continuation.resume(returning: chunk)
            } else if cancelled {
                condition.unlock()
                continuation.resume(throwing: CorralError(.cancelled, "the writer of this stream has gone"))
            } else if finished {
                let failure = self.failure
                condition.unlock()
                if let failure { continuation.resume(throwing: failure) } else { continuation.resume(returning: nil) }
            } else {
                receiver = continuation
                condition.unlock()
            }
        }
    }

    // MARK: Either side

    /// Ends the stream; the reader gets the queued chunks, then nil or `error`.
    public func finish(throwing error: (any Error)? = nil) {
        condition.lock()
        guard !finished else {
            condition.unlock()
            return
        }
        finished = true
        failure = error
        let waiting = receiver
        receiver = nil
        condition.broadcast()
        condition.unlock()
        if let waiting {
            if let error { waiting.resume(throwing: error) } else { waiting.resume(returning: nil) }
        }
    }

    /// Abandons the stream from either end: blocked or suspended callers on both sides wake
    /// with a cancellation error.
    public func cancel() {
        condition.lock()
        cancelled = true
        chunks.removeAll()
        buffered = 0
        let waitingReceiver = receiver
        let waitingSender = sender
        receiver = nil
        sender = nil
        condition.broadcast()
        condition.unlock()
        waitingReceiver?.resume(throwing: CorralError(.cancelled, "the stream was abandoned"))
        waitingSender?.resume(throwing: CorralError(.cancelled, "the stream was abandoned"))
    }

    /// The async-side reader as a stream, for APIs that take one (an HTTP request body).
    public func asyncStream() -> AsyncThrowingStream<[UInt8], any Error> {
        AsyncThrowingStream { [self] in try await receive() }
    }

    // Caller holds the lock.
    private func deliverOrQueue(_ bytes: [UInt8]) -> CheckedContinuation<[UInt8]?, any Error>? {
        if let waiting = receiver {
            receiver = nil
            return waiting
        }
        chunks.append(bytes)
        buffered += bytes.count
        condition.broadcast()
        return nil
    }

    // Caller holds the lock.
    private func takeAll() -> [UInt8] {
        var joined = chunks[0]
        for chunk in chunks.dropFirst() { joined.append(contentsOf: chunk) }
        chunks.removeAll(keepingCapacity: true)
        buffered = 0
        let waitingSender = sender
        sender = nil
        condition.broadcast()
        waitingSender?.resume()
        return joined
    }
}

/// Runs blocking work on a new thread and awaits its result, keeping it off the cooperative
/// pool.
public func runOnThread<T: Sendable>(name: String = "corral-blocking", _ work: @escaping @Sendable () throws -> T)
    async throws -> T
{
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try work() })
        }
        thread.name = name
        thread.start()
    }
}

/// Runs blocking work that need not escape (a closure the caller lends, such as a change to a
/// file under its lock) on a new thread, and awaits it. The caller stays suspended until the
/// thread is done with `work`, and the thread lets go of it before it wakes the caller, so the
/// closure never outlives the call (`withoutActuallyEscaping` checks that).
public func runBorrowedOnThread<T: Sendable>(name: String, _ work: () throws -> T) async throws -> T {
    try await withoutActuallyEscaping(work) { work in
        let handoff = BorrowedWork(work)
        return try await runOnThread(name: name) {
            defer { handoff.work = nil }
            guard let work = handoff.work else {
                throw CorralError(.internalError, "\(name): the work was taken twice")
            }
            return try work()
        }
    }
}

/// `runBorrowedOnThread`'s work, handed to the thread that runs it while the caller waits.
private final class BorrowedWork<T>: @unchecked Sendable {
    var work: (() throws -> T)?
    init(_ work: @escaping () throws -> T) { self.work = work }
}
