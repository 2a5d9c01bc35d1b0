import Foundation
import Synchronization

/// Sleeping and the wall clock, injected into the pools and the reaper so that their timer
/// logic (refill, max_age, ttls, backoff) runs on a manual clock in tests.
public struct ServiceTimer: Sendable {
    private let sleeper: @Sendable (Duration) async throws -> Void
    /// Wall time: ttls and ages are stored as dates.
    public let now: @Sendable () -> Date

    public init<C: Clock>(clock: C, now: @escaping @Sendable () -> Date) where C.Duration == Duration {
        self.sleeper = { try await clock.sleep(for: $0) }
        self.now = now
    }

    public static var system: ServiceTimer { ServiceTimer(clock: ContinuousClock(), now: { Date() }) }

    public func sleep(for duration: Duration) async throws {
        try await sleeper(duration)
    }
}

/// Exponential backoff without jitter: `initial`, doubled after each further failure, at most
/// `maximum`.
public struct Backoff: Sendable, Hashable {
    public var initial: Duration
    public var maximum: Duration

    public init(initial: Duration = .seconds(1), maximum: Duration = .seconds(60)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The wait after `failures` failures in a row (1 for the first).
    public func delay(afterFailures failures: Int) -> Duration {
        guard failures > 0 else { return .zero }
        var delay = initial
        for _ in 1..<min(failures, 62) {
            delay = delay * 2
            if delay >= maximum { return maximum }
        }
        return min(delay, maximum)
    }
}

/// Waiters for a condition on a value that changes: each waiter resumes once the condition
/// holds, or throws when its task is cancelled.
final class ConditionWaiters<Value: Sendable>: Sendable {
    private struct Waiter {
        var condition: @Sendable (Value) -> Bool
        var continuation: CheckedContinuation<Value, any Error>
    }

    private let state: Mutex<(current: Value, waiters: [UInt64: Waiter], next: UInt64)>

    init(_ initial: Value) {
        state = Mutex((current: initial, waiters: [:], next: 0))
    }

    func update(_ value: Value) {
        let ready: [(CheckedContinuation<Value, any Error>)] = state.withLock { state in
            state.current = value
            let matching = state.waiters.filter { $0.value.condition(value) }
            for key in matching.keys { state.waiters[key] = nil }
            return matching.values.map(\.continuation)
        }
        for continuation in ready { continuation.resume(returning: value) }
    }

    func wait(until condition: @escaping @Sendable (Value) -> Bool) async throws -> Value {
        let id = state.withLock { state -> UInt64 in
            state.next += 1
            return state.next
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let resolved: Result<Value, any Error>? = state.withLock { state in
                    if condition(state.current) { return .success(state.current) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    state.waiters[id] = Waiter(condition: condition, continuation: continuation)
                    return nil
                }
                if let resolved { continuation.resume(with: resolved) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }
}
