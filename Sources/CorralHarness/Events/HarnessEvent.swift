import CorralCore
import CorralSession

/// The event types the harness writes. Every step of an agent run is one of these; the
/// harness keeps nothing else. docs/harness.md describes each one's data.
public enum HarnessEvent {
    /// First event of an agent session: the agent's spec (brain, limits, hands, budget).
    public static let sessionCreated = "session.created"
    /// A message from the user: the task, or a follow-up given on wake.
    public static let userMessage = "user.message"
    /// One answer of the brain: its content blocks (text and tool calls), stop reason, usage.
    public static let brainResponse = "brain.response"
    /// A failed brain call: each failed attempt, retried or final.
    public static let brainError = "brain.error"
    /// A tool call about to run, made durable before it is dispatched.
    public static let toolIntent = "tool.intent"
    /// What a tool call returned: status `ok`, `error` or `unknown`.
    public static let toolResult = "tool.result"
    /// A named sandbox now exists for the session (name to sandbox id).
    public static let sandboxProvisioned = "sandbox.provisioned"
    /// A named sandbox was found gone or stopped; a new one replaces it on its next use.
    public static let sandboxLost = "sandbox.lost"
    /// A new harness took the session over (a new lease) and says what it repaired.
    public static let harnessWoke = "harness.woke"
    /// The context was compacted: a summary written by the brain stands for what came before.
    public static let contextCompacted = "context.compacted"
    /// The agent stopped: its turn ended, or a limit was reached.
    public static let sessionEnded = "session.ended"

    public static let all = [
        sessionCreated, userMessage, brainResponse, brainError, toolIntent, toolResult, sandboxProvisioned, sandboxLost,
        harnessWoke, contextCompacted, sessionEnded,
    ]
}

/// Deterministic event ids: derived from what the event is about (the turn, the call's
/// position in it, the sandbox's name and generation), so that an append retried after a
/// failure or a crash is recognised by the store instead of written twice.
enum HarnessEventID {
    static let sessionCreated = EventID(unchecked: "session.created")
    static func userMessage(_ number: Int) -> EventID { EventID(unchecked: "um.\(number)") }
    static func brainResponse(turn: Int) -> EventID { EventID(unchecked: "br.\(turn)") }
    static func brainError(turn: Int, epoch: UInt64, attempt: Int, compaction: Bool) -> EventID {
        EventID(unchecked: "be.\(compaction ? "c" : "t")\(turn).e\(epoch).a\(attempt)")
    }
    static func toolIntent(turn: Int, index: Int) -> EventID { EventID(unchecked: "ti.\(turn).\(index)") }
    static func toolResult(turn: Int, index: Int) -> EventID { EventID(unchecked: "tr.\(turn).\(index)") }
    static func sandboxProvisioned(name: String, generation: Int) -> EventID {
        EventID(unchecked: "sp.\(name).\(generation)")
    }
    static func sandboxLost(name: String, generation: Int) -> EventID { EventID(unchecked: "sl.\(name).\(generation)") }
    static func harnessWoke(epoch: UInt64) -> EventID { EventID(unchecked: "hw.\(epoch)") }
    static func contextCompacted(_ number: Int) -> EventID { EventID(unchecked: "cc.\(number)") }
    static func sessionEnded(turn: Int, userMessages: Int) -> EventID {
        EventID(unchecked: "end.\(userMessages).\(turn)")
    }
}

/// How a tool call ended, as `tool.result` records it.
public enum ToolCallStatus: String, Sendable, Hashable, Codable {
    case ok
    case error
    /// The harness stopped between the intent and the result of a call that is not safe to
    /// repeat: it may or may not have run. The model is told to check.
    case unknown
}
