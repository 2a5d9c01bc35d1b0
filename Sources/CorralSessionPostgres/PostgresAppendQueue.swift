import CorralCore
import CorralSession
import Synchronization

/// Group commit: appends that arrive while `maxCommitters` transactions are already under
/// way wait in a queue, and the next committer takes every waiting append (up to a batch
/// limit) into one call of `append_batch`, one transaction and one WAL flush. An append that
/// arrives while a committer is free goes at once, alone: batching adds no delay when there
/// is nothing to share.
///
/// A committer that finishes hands the next batch to the first waiter in it, which commits it
/// on its own task; so no caller runs more than its own batch and the one it was handed.
final class PostgresAppendQueue: Sendable {
    struct Request: Sendable {
        var session: SessionID
        var epoch: UInt64
        var expectedSeq: UInt64?
        var events: [NewEvent.Checked]
        var time: Int64
        var sync: Bool
    }

    struct Outcome: Sendable {
        var kind: String
        var first: UInt64
        var written: Int
        var head: UInt64
        var epoch: UInt64
        var durable: Bool
    }

    /// Commits a batch; `alone` says that no other transaction of this queue is under way.
    typealias Commit = @Sendable (_ batch: [Request], _ alone: Bool) async throws -> [Outcome]

    private struct Entry: Sendable {
        var request: Request
        var ticket: Ticket
    }

    private enum Role: Sendable {
        case done(Result<Outcome, any Error>)
        case lead([Entry])
    }

    /// Where one append's caller learns what became of it: a result, or a batch to commit.
    /// A ticket can be handed a batch and later the result of its own append (which is in
    /// that batch), so a wait takes one role and leaves the ticket ready for the next.
    private final class Ticket: Sendable {
        private enum State {
            case pending(CheckedContinuation<Role, Never>?)
            case ready(Role)
        }
        private let state = Mutex(State.pending(nil))
        private let finished = Mutex(false)

        func resolve(_ role: Role) {
            if case .done = role { finished.withLock { $0 = true } }
            let waiter = state.withLock { state -> CheckedContinuation<Role, Never>? in
                switch state {
                case .pending(let continuation?):
                    state = .pending(nil)
                    return continuation
                case .pending(nil):
                    state = .ready(role)
                    return nil
                case .ready:
                    return nil
                }
            }
            waiter?.resume(returning: role)
        }

        /// True once this ticket's own append has its result.
        var isResolved: Bool { finished.withLock { $0 } }

        func wait() async -> Role {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> Role? in
                    switch state {
                    case .ready(let role):
                        state = .pending(nil)
                        return role
                    case .pending:
                        state = .pending(continuation)
                        return nil
                    }
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }

    private struct State: ~Copyable {
        var queue: [Entry] = []
        var committers = 0
    }

    let maxCommitters: Int
    let maxBatch: Int
    let maxBatchBytes: Int
    private let commit: Commit
    private let state = Mutex(State())

    init(maxCommitters: Int, maxBatch: Int, maxBatchBytes: Int, commit: @escaping Commit) {
        self.maxCommitters = max(1, maxCommitters)
        self.maxBatch = max(1, maxBatch)
        self.maxBatchBytes = maxBatchBytes
        self.commit = commit
    }

    func submit(_ request: Request) async throws -> Outcome {
        let ticket = Ticket()
        let batch = state.withLock { state -> [Entry]? in
            state.queue.append(Entry(request: request, ticket: ticket))
            guard state.committers < maxCommitters else { return nil }
            state.committers += 1
            return takeBatch(&state)
        }
        var role: Role
        if let batch {
            role = .lead(batch)
        } else {
            role = await ticket.wait()
        }
        while true {
            switch role {
            case .done(let result):
                return try result.get()
            case .lead(let batch):
                await run(batch)
                let (next, handOff) = state.withLock { state -> ([Entry]?, [Entry]?) in
                    if state.queue.isEmpty {
                        state.committers -= 1
                        return (nil, nil)
                    }
                    let batch = takeBatch(&state)
                    // Still waiting for our own append: keep committing. Otherwise the first
                    // waiter of the next batch commits it.
                    return ticket.isResolved ? (nil, batch) : (batch, nil)
                }
                if let handOff, let first = handOff.first { first.ticket.resolve(.lead(handOff)) }
                if let next {
                    role = .lead(next)
                } else {
                    role = await ticket.wait()
                }
            }
        }
    }

    private func takeBatch(_ state: inout State) -> [Entry] {
        var bytes = 0
        var count = 0
        for entry in state.queue {
            let size = entry.request.events.reduce(0) { $0 + $1.data.count + $1.type.count + $1.id.rawValue.utf8.count }
            if count > 0 && (count >= maxBatch || bytes + size > maxBatchBytes) { break }
            bytes += size
            count += 1
        }
        let batch = Array(state.queue.prefix(count))
        state.queue.removeFirst(count)
        return batch
    }

    private func run(_ batch: [Entry]) async {
        do {
            let alone = state.withLock { $0.committers == 1 }
            let outcomes = try await commit(batch.map(\.request), alone)
            for (entry, outcome) in zip(batch, outcomes) { entry.ticket.resolve(.done(.success(outcome))) }
            if outcomes.count < batch.count {
                let missing = CorralError(
                    .internalError, "the session store answered \(outcomes.count) of \(batch.count) appends")
                for entry in batch[outcomes.count...] { entry.ticket.resolve(.done(.failure(missing))) }
            }
        } catch {
            for entry in batch { entry.ticket.resolve(.done(.failure(error))) }
        }
    }
}
