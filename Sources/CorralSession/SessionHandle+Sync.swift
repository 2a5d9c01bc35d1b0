import CorralCore
import Foundation

/// Durability: fdatasync on the store's blocking threads, shared by every append that is
/// waiting when it starts.
extension SessionHandle {
    struct SyncState {
        /// Every seq up to this one is known to be on disk.
        var durable: UInt64 = 0
        /// An fdatasync of this session is running.
        var syncing = false
        /// Something asked for another one while it ran.
        var again = false
        /// A job is queued to run as soon as a thread is free.
        var queued = false
        /// A group-commit flush is queued for a deadline.
        var timerArmed = false
        var waiters: [(seq: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        var failure: CorralError?

        var isIdle: Bool { !syncing && !queued && !timerArmed && waiters.isEmpty }
    }

    /// Returns once every seq up to `seq` is on disk.
    func awaitDurable(_ seq: UInt64) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            enum Next { case done, fail(CorralError), wait(submit: Bool) }
            let next: Next = syncState.withLock { state in
                if let failure = state.failure { return .fail(failure) }
                if state.durable >= seq { return .done }
                state.waiters.append((seq, continuation))
                if state.syncing {
                    state.again = true
                    return .wait(submit: false)
                }
                if state.queued { return .wait(submit: false) }
                state.queued = true
                return .wait(submit: true)
            }
            switch next {
            case .done: continuation.resume()
            case .fail(let error): continuation.resume(throwing: error)
            case .wait(let submit):
                if submit { workers.submit { [self] in self.runSync(fromQueue: true) } }
            }
        }
    }

    /// Group commit: make sure an fdatasync starts within `delay`.
    func scheduleFlush(within delay: Duration) {
        let arm = syncState.withLock { state -> Bool in
            guard !state.timerArmed else { return false }
            state.timerArmed = true
            return true
        }
        guard arm else { return }
        let (seconds, attoseconds) = delay.components
        let nanoseconds = UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
        workers.submit(notBefore: BlockingWorkers.monotonicNow() + nanoseconds) { [self] in
            self.syncState.withLock { $0.timerArmed = false }
            self.runSync(fromQueue: false)
        }
    }

    /// Runs on a blocking thread: fdatasync until no waiter is left behind.
    private func runSync(fromQueue: Bool) {
        let proceed = syncState.withLock { state -> Bool in
            if fromQueue { state.queued = false }
            if state.syncing {
                state.again = true
                return false
            }
            state.syncing = true
            state.again = false
            return true
        }
        guard proceed else { return }
        while true {
            // Everything published before this point is in the page cache; the older segments
            // were made durable when they were sealed.
            let (target, file) = view.withLock { ($0.head, $0.active) }
            var failure: CorralError?
            if let file {
                do {
                    try FileIO.syncData(file.fd, path: file.path)
                } catch let error as CorralError {
                    failure = CorralError(
                        .io, "session \(id): fdatasync failed, so recent events may not be on disk: \(error.message)",
                        hint: "check the disk; reopen the store to continue (recovery reads what is really there)")
                } catch {
                    failure = CorralError(.io, "session \(id): fdatasync failed: \(error)")
                }
            }
            let (ready, failed, more) = syncState.withLock {
                state -> ([CheckedContinuation<Void, any Error>], [CheckedContinuation<Void, any Error>], Bool) in
                if let failure {
                    state.failure = failure
                    let all = state.waiters.map(\.continuation)
                    state.waiters = []
                    state.syncing = false
                    return ([], all, false)
                }
                state.durable = max(state.durable, target)
                var ready: [CheckedContinuation<Void, any Error>] = []
                state.waiters.removeAll { waiter in
                    guard waiter.seq <= state.durable else { return false }
                    ready.append(waiter.continuation)
                    return true
                }
                let more = state.again || !state.waiters.isEmpty
                state.again = false
                if !more { state.syncing = false }
                return (ready, [], more)
            }
            for continuation in ready { continuation.resume() }
            if let failure {
                writer.withLock { $0.failure = failure }
                for continuation in failed { continuation.resume(throwing: failure) }
            }
            if !more { return }
        }
    }
}
