import CorralCore
import Foundation

/// `POST /v1/agents`: make an agent session for `task` and start the harness on it.
public struct StartAgentRequest: Codable, Sendable, Hashable {
    public var task: String
    /// `anthropic`, `openai`, or (local tenant only) `scripted:FILE`.
    public var brain: String
    public var model: String?
    public var template: String?
    /// A repository to clone into each of the agent's sandboxes, through the gateway.
    public var repo: String?
    public var maxTurns: Int?
    public var maxTokens: Int?
    public var maxTime: DurationValue?
    public var contextBudget: Int?
    public var system: String?

    public init(task: String, brain: String) {
        self.task = task
        self.brain = brain
    }
}

/// `POST /v1/sessions/{id}/harness/run`: resume the session's run (a wake), with an optional
/// new user message.
public struct RunHarnessRequest: Codable, Sendable, Hashable {
    public var message: String?

    public init(message: String? = nil) { self.message = message }
}

/// The harness's state on one session, as the service sees it.
public struct HarnessStatus: Codable, Sendable, Hashable {
    public var session: String
    /// `running`, `stopping` (asked through another replica), or `idle`.
    public var state: String
    /// How the last run in this service ended: `end_turn`, `max_turns`, ..., `stopped`, `error`.
    public var lastOutcome: String?
    public var lastError: String?
    /// The service replica that runs it, when replicas share a PostgreSQL store.
    public var replica: String?

    public init(
        session: String, state: String, lastOutcome: String? = nil, lastError: String? = nil, replica: String? = nil
    ) {
        self.session = session
        self.state = state
        self.lastOutcome = lastOutcome
        self.lastError = lastError
        self.replica = replica
    }
}
