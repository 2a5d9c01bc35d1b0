import CorralCore
import CorralSession
import Foundation
import Logging

/// The loop that turns a session into an agent run: read the session, call the brain, route
/// its tool calls to sandboxes, write every step back.
///
/// A harness holds no state of its own. `run` takes a new lease on the session (fencing off
/// any harness still running on an older one), rebuilds what it needs from the log, repairs
/// a run cut short (see docs/harness.md), and goes on until the brain ends its turn, a limit
/// is reached or an error stops it. Kill it at any instant and `run` it again anywhere:
/// nothing is lost, and nothing is done twice without the model being told.
public struct Harness: Sendable {
    public struct Configuration: Sendable {
        public var retry = RetryPolicy()
        /// Output tokens a turn may use.
        public var maxOutputTokens = 8192
        /// Share of the context budget a compaction keeps verbatim (the latest exchanges).
        public var compactionTailShare = 0.25
        /// The system prompt when the spec gives none.
        public var defaultSystemPrompt = Harness.defaultSystemPrompt
        public var tenant: TenantID = .local
        /// How the harness waits between brain retries; tests pass one that records.
        public var sleep: @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) }
        public var now: @Sendable () -> Date = { Date() }

        public init() {}
    }

    public let store: any SessionStore
    public let hands: any HandProvisioner
    public let configuration: Configuration
    let logger: Logger

    public init(
        store: any SessionStore, hands: any HandProvisioner, configuration: Configuration = Configuration(),
        logger: Logger? = nil
    ) {
        self.store = store
        self.hands = hands
        self.configuration = configuration
        self.logger = logger ?? Logger(label: "corral.harness")
    }

    /// Makes an agent session for `task`: `session.created` (the spec) and the task's
    /// `user.message`, durable before this returns. Nothing runs yet.
    public func create(task: String, spec: AgentSpec, id: SessionID? = nil) async throws -> SessionID {
        let spec = try spec.validated()
        try hands.check(spec.hands)
        guard !task.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw CorralError.invalidArgument(
                "the task is empty", hint: #"say what the agent should do: corral agent run "fix the failing test""#)
        }
        guard task.utf8.count / 4 <= spec.contextBudget / 2 else {
            throw CorralError.invalidArgument(
                "the task (about \(task.utf8.count / 4) tokens) does not fit half the context budget of \(spec.contextBudget)",
                hint: "shorten the task, or put the details in a file and point the agent at it")
        }
        let info = try await store.create(id: id, tenant: configuration.tenant, metadata: ["kind": "agent"])
        let lease = try await store.currentLease(info.id)
        _ = try await store.append(
            info.id,
            [
                NewEvent(
                    id: HarnessEventID.sessionCreated, type: HarnessEvent.sessionCreated,
                    data: ["agent": spec.jsonValue]),
                NewEvent(
                    id: HarnessEventID.userMessage(1), type: HarnessEvent.userMessage, data: ["text": .string(task)]),
            ],
            expectedSeq: 1, lease: lease, durability: .fsync)
        logger.info("agent session created", metadata: ["session": "\(info.id)", "brain": "\(spec.brain.description)"])
        return info.id
    }

    /// The spec a session was created with, or nil for a session not made by `create`.
    public func recordedSpec(_ session: SessionID) async throws -> AgentSpec? {
        let page = try await store.readPage(session, from: 1, limit: 1)
        guard let first = page.events.first, first.type == HarnessEvent.sessionCreated else { return nil }
        return first.data["agent"].flatMap(AgentSpec.init(json:))
    }

    /// Takes the session over and runs it: finishes what a previous harness left (see
    /// docs/harness.md), adds `message` as a new user message if given, then loops until
    /// the brain ends its turn or a limit is reached. `observer` sees every appended event.
    ///
    /// Throws `CorralError` when the brain fails for good (the failure is recorded as
    /// `brain.error` first), when another harness takes the session over (`.conflict`), or
    /// when the store fails. The session stays resumable in every case.
    public func run(
        _ session: SessionID, brain: any Brain, message: String? = nil, observer: (@Sendable (Event) -> Void)? = nil
    ) async throws -> RunOutcome {
        let lease = try await store.wake(session)
        let state = try await SessionLoader(store: store, session: session).load()
        guard state.userMessages > 0 || message != nil else {
            throw CorralError(
                .invalidArgument, "session \(session) has no task: nothing to run",
                hint: "start an agent with `corral agent run \"task\"`, or pass --message")
        }
        if let ended = state.ended, message == nil {
            return RunOutcome(session: session, reason: ended, turns: state.task.turns, text: nil, resumed: false)
        }
        let spec = state.spec ?? AgentSpec(brain: brain.spec)
        var loop = AgentLoop(
            harness: self, session: session, lease: lease, brain: brain, spec: spec, state: state,
            queuedMessage: message,
            observer: observer)
        try await loop.announce()
        logger.info(
            "harness running",
            metadata: [
                "session": "\(session)", "epoch": "\(lease.epoch)", "head": "\(state.head)",
                "brain": "\(brain.spec.description)",
            ])
        let outcome = try await loop.drive()
        logger.info(
            "harness stopped",
            metadata: ["session": "\(session)", "reason": "\(outcome.reason)", "turns": "\(outcome.turns)"])
        return outcome
    }

    public static let defaultSystemPrompt = """
        You are an agent working on a task with tools that run in disposable Linux sandboxes. Files live in \
        /workspace; each bash call starts a fresh shell there, and only files carry over between calls. A sandbox \
        is made when a tool first needs it. The sandbox named "main" is the default; other names give other \
        sandboxes (sandbox_tool, or a tool's "sandbox" field). If a tool result says its outcome is unknown, check \
        what happened before doing it again. session_events reads the session's full history. When the task is \
        done, answer with a short report and no tool call.
        """
}

/// How a run ended.
public struct RunOutcome: Sendable, Hashable {
    public var session: SessionID
    /// `end_turn` (the brain finished), `max_turns`, `max_tokens`, `wall_time`, or the
    /// brain's own stop reason.
    public var reason: String
    /// Brain turns in the current task.
    public var turns: Int
    /// The brain's last words.
    public var text: String?
    /// False when the session had already ended and there was nothing to do.
    public var resumed: Bool
}

/// When and how long to wait before retrying a brain call.
public struct RetryPolicy: Sendable, Hashable {
    /// Attempts in all, the first included.
    public var maxAttempts = 5
    public var initialDelay: Duration = .seconds(1)
    public var maxDelay: Duration = .seconds(60)
    /// A `retry-after` longer than this is cut to it.
    public var maxRetryAfter: Duration = .seconds(600)

    public init() {}

    /// The wait after failed attempt `attempt` (from 1): what the server asked for, else
    /// exponential backoff with ±20 % jitter.
    public func delay(afterAttempt attempt: Int, error: BrainError) -> Duration {
        if let asked = error.retryAfter { return min(asked, maxRetryAfter) }
        let exponent = min(max(attempt - 1, 0), 20)
        let base = min(initialDelay * (1 << exponent), maxDelay)
        // Scaled as a Duration: rounding to whole milliseconds would flatten short delays.
        return base * Double.random(in: 0.8...1.2)
    }
}
