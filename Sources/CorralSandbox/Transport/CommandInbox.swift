import ControlProtocol
import CorralCore
import DockerEngine
import Synchronization

/// What a running command's reader is handed: the start, output chunks, the end. Filled by the
/// transport (the control connection's event loop, or the engine exec's task) and read by one
/// `RunningCommand`.
///
/// Output is credited back (`consumed`) as the reader takes it, which is what lets the command
/// go on: a reader that stops reading stalls its own command, nothing else. `wait()` without
/// an output reader drops the output as it comes, so that a command whose output nobody wants
/// still ends.
final class CommandInbox: Sendable {
    /// How the command's start went.
    enum Start: Sendable {
        case started(pid: Int)
        case attached(AttachedReport)
    }

    /// How the command's stream ended.
    enum Ending: Sendable {
        case exited(CommandStatus)
        case failed(any Error)
        /// The transport lost the command (the control connection dropped); `sent` is false
        /// when the request never left this process.
        case lost(sent: Bool)
    }

    private struct State {
        var start: Result<Start, any Error>?
        var startWaiters: [CheckedContinuation<Start, any Error>] = []
        var chunks: [CommandOutputChunk] = []
        var head = 0
        var queuedBytes = 0
        var ending: Ending?
        var outputWaiter: CheckedContinuation<CommandOutputChunk?, any Error>?
        var endingWaiters: [CheckedContinuation<Ending, Never>] = []
        var producerWaiter: CheckedContinuation<Void, Never>?
        var reading = false
        var discarding = false
        var nextOffset: Int64 = 0
    }

    private let state = Mutex(State())
    /// Bytes the reader took, for credit.
    let consumed: @Sendable (Int) -> Void
    /// Above this, `push(waiting:)` waits for the reader.
    let producerLimit: Int

    init(producerLimit: Int = 1 << 20, consumed: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.producerLimit = producerLimit
        self.consumed = consumed
    }

    // MARK: Producer

    func started(_ start: Start) {
        let waiters = state.withLock { state -> [CheckedContinuation<Start, any Error>] in
            guard state.start == nil else { return [] }
            state.start = .success(start)
            if case .attached(let report) = start { state.nextOffset = report.startOffset }
            defer { state.startWaiters.removeAll() }
            return state.startWaiters
        }
        for waiter in waiters { waiter.resume(returning: start) }
    }

    /// Queues output; returns the bytes dropped at once (nobody reads it), to be credited.
    @discardableResult
    func push(_ stream: StdioStream, _ bytes: [UInt8]) -> Int {
        let (waiter, chunk, dropped) = state.withLock {
            state -> (CheckedContinuation<CommandOutputChunk?, any Error>?, CommandOutputChunk, Int) in
            let chunk = CommandOutputChunk(stream: stream, offset: state.nextOffset, bytes: bytes)
            state.nextOffset += Int64(bytes.count)
            if state.discarding { return (nil, chunk, bytes.count) }
            if let waiter = state.outputWaiter {
                state.outputWaiter = nil
                return (waiter, chunk, 0)
            }
            state.chunks.append(chunk)
            state.queuedBytes += bytes.count
            return (nil, chunk, 0)
        }
        if let waiter {
            consumed(bytes.count)
            waiter.resume(returning: chunk)
        }
        return dropped
    }

    /// Queues output, waiting while more than `producerLimit` is unread (for transports that
    /// have no window of their own).
    func push(waiting stream: StdioStream, _ bytes: [UInt8]) async {
        push(stream, bytes)
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let wait = state.withLock { state -> Bool in
                guard state.queuedBytes > producerLimit, !state.discarding, state.ending == nil else { return false }
                state.producerWaiter = waiter
                return true
            }
            if !wait { waiter.resume() }
        }
    }

    func finish(_ ending: Ending) {
        let (startWaiters, outputWaiter, endingWaiters, producer) = state.withLock { state in
            guard state.ending == nil else {
                return (
                    [CheckedContinuation<Start, any Error>](),
                    CheckedContinuation<CommandOutputChunk?, any Error>?.none,
                    [CheckedContinuation<Ending, Never>](), CheckedContinuation<Void, Never>?.none
                )
            }
            state.ending = ending
            var startWaiters: [CheckedContinuation<Start, any Error>] = []
            if state.start == nil {
                state.start = .failure(Self.startFailure(ending))
                startWaiters = state.startWaiters
                state.startWaiters.removeAll()
            }
            // The reader gets the end only once it took what is queued.
            let outputWaiter = state.head < state.chunks.count ? nil : state.outputWaiter
            if outputWaiter != nil { state.outputWaiter = nil }
            defer {
                state.endingWaiters.removeAll()
                state.producerWaiter = nil
            }
            return (startWaiters, outputWaiter, state.endingWaiters, state.producerWaiter)
        }
        let failure = Self.startFailure(ending)
        for waiter in startWaiters { waiter.resume(throwing: failure) }
        if let outputWaiter {
            switch ending {
            case .exited: outputWaiter.resume(returning: nil)
            case .failed(let error): outputWaiter.resume(throwing: error)
            case .lost: outputWaiter.resume(throwing: LostCommand())
            }
        }
        for waiter in endingWaiters { waiter.resume(returning: ending) }
        producer?.resume()
    }

    /// Thrown by `next()` for a lost command; the `RunningCommand` says why.
    struct LostCommand: Error {}

    private static func startFailure(_ ending: Ending) -> any Error {
        switch ending {
        case .failed(let error): error
        case .lost(let sent): NotStarted(sent: sent)
        case .exited: CorralError(.internalError, "the command ended before it started")
        }
    }

    /// The command did not start: its request was not sent, or the connection went first.
    struct NotStarted: Error {
        var sent: Bool
    }

    // MARK: Reader

    func awaitStart() async throws -> Start {
        try await withCheckedThrowingContinuation { waiter in
            let known = state.withLock { state -> Result<Start, any Error>? in
                if let start = state.start { return start }
                state.startWaiters.append(waiter)
                return nil
            }
            if let known { waiter.resume(with: known) }
        }
    }

    /// The next chunk; nil once the command exited and everything was read. Throws the
    /// command's failure, `LostCommand`, or `CancellationError` when the task is cancelled.
    func next() async throws -> CommandOutputChunk? {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<CommandOutputChunk?, any Error>) in
                enum Now {
                    case chunk(CommandOutputChunk, CheckedContinuation<Void, Never>?)
                    case end(Ending)
                    case cancelled
                    case wait
                }
                let now = state.withLock { state -> Now in
                    state.reading = true
                    if state.head < state.chunks.count {
                        let chunk = state.chunks[state.head]
                        state.head += 1
                        state.queuedBytes -= chunk.bytes.count
                        if state.head > 64 && state.head * 2 > state.chunks.count {
                            state.chunks.removeFirst(state.head)
                            state.head = 0
                        }
                        var producer: CheckedContinuation<Void, Never>?
                        if state.queuedBytes <= producerLimit {
                            producer = state.producerWaiter
                            state.producerWaiter = nil
                        }
                        return .chunk(chunk, producer)
                    }
                    if let ending = state.ending { return .end(ending) }
                    if Task.isCancelled { return .cancelled }
                    state.outputWaiter = waiter
                    return .wait
                }
                switch now {
                case .chunk(let chunk, let producer):
                    consumed(chunk.bytes.count)
                    producer?.resume()
                    waiter.resume(returning: chunk)
                case .end(.exited):
                    waiter.resume(returning: nil)
                case .end(.failed(let error)):
                    waiter.resume(throwing: error)
                case .end(.lost):
                    waiter.resume(throwing: LostCommand())
                case .cancelled:
                    waiter.resume(throwing: CancellationError())
                case .wait:
                    break
                }
            }
        } onCancel: {
            state.withLock { state in
                defer { state.outputWaiter = nil }
                return state.outputWaiter
            }?.resume(throwing: CancellationError())
        }
    }

    /// Waits for the end. Unless a reader is taking the output, what is queued and what
    /// comes later is dropped (and credited), so that the command is not held up.
    func ending() async -> Ending {
        let (dropped, producer) = state.withLock { state -> (Int, CheckedContinuation<Void, Never>?) in
            guard !state.reading else { return (0, nil) }
            state.discarding = true
            let dropped = state.queuedBytes
            state.chunks.removeAll()
            state.head = 0
            state.queuedBytes = 0
            defer { state.producerWaiter = nil }
            return (dropped, state.producerWaiter)
        }
        if dropped > 0 { consumed(dropped) }
        producer?.resume()
        return await withCheckedContinuation { waiter in
            let known = state.withLock { state -> Ending? in
                if let ending = state.ending { return ending }
                state.endingWaiters.append(waiter)
                return nil
            }
            if let known { waiter.resume(returning: known) }
        }
    }

    /// The end, if it came.
    var currentEnding: Ending? { state.withLock { $0.ending } }
}
