import CorralCore

/// A model endpoint: given a transcript and the tools, it answers with text and tool calls.
///
/// Adapters turn the neutral transcript into their provider's wire shape and back. They do
/// not retry: a failed call throws `BrainError`, and the harness records it, waits and
/// retries when the error says that helps, so that every attempt is an event.
public protocol Brain: Sendable {
    var spec: BrainSpec { get }
    func respond(to request: BrainRequest) async throws -> BrainResponse
}

/// One call to a brain.
public struct BrainRequest: Sendable {
    public enum Purpose: Sendable, Hashable {
        /// The next turn of the agent.
        case turn
        /// A summary of the context so far, for compaction; tools may not be called.
        case compaction
    }

    public var system: String
    public var messages: [TranscriptMessage]
    public var tools: [ToolDeclaration]
    public var purpose: Purpose
    /// The number of this turn in the session (1 for the first brain response): a scripted
    /// brain picks its reply by it.
    public var turn: Int
    public var maxOutputTokens: Int

    public init(
        system: String, messages: [TranscriptMessage], tools: [ToolDeclaration], purpose: Purpose, turn: Int,
        maxOutputTokens: Int
    ) {
        self.system = system
        self.messages = messages
        self.tools = tools
        self.purpose = purpose
        self.turn = turn
        self.maxOutputTokens = maxOutputTokens
    }
}

/// A tool as the brain is told about it.
public struct ToolDeclaration: Sendable, Hashable {
    public var name: String
    public var description: String
    /// JSON Schema of the input object.
    public var inputSchema: JSONValue
    /// Set for tools Anthropic defines itself (`bash_20250124`, `text_editor_20250728`): they
    /// are declared to the Anthropic API in that shape, type and name only.
    public var anthropicType: String?

    public init(name: String, description: String, inputSchema: JSONValue, anthropicType: String? = nil) {
        self.name = name
        self.description = description
        self.inputSchema = inputSchema
        self.anthropicType = anthropicType
    }
}

public struct BrainResponse: Sendable, Hashable {
    public var content: [ContentBlock]
    /// The provider's reason, normalised: `end_turn`, `tool_use`, `max_tokens`, or the
    /// provider's own word.
    public var stopReason: String
    public var model: String
    /// The provider's id for the response, when it gives one.
    public var id: String?
    public var usage: Usage

    public init(content: [ContentBlock], stopReason: String, model: String, id: String? = nil, usage: Usage = Usage()) {
        self.content = content
        self.stopReason = stopReason
        self.model = model
        self.id = id
        self.usage = usage
    }

    public struct Usage: Sendable, Hashable {
        public var inputTokens: Int
        public var outputTokens: Int

        public init(inputTokens: Int = 0, outputTokens: Int = 0) {
            self.inputTokens = inputTokens
            self.outputTokens = outputTokens
        }
    }

    public var toolUses: [ToolUse] {
        content.compactMap { if case .toolUse(let use) = $0 { use } else { nil } }
    }

    public var text: String {
        content.compactMap { if case .text(let text) = $0 { text } else { nil } }.joined(separator: "\n")
    }
}

/// Why a brain call failed. Its message never holds a credential.
public struct BrainError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// 401 or 403: the key is missing, wrong or not allowed.
        case authentication
        /// 400, 404, 413, 422: the request was refused as it is; repeating it will not help.
        case invalidRequest = "invalid_request"
        /// 429.
        case rateLimited = "rate_limited"
        /// 529, or an overloaded error in the body.
        case overloaded
        /// Other 5xx.
        case server
        /// A success status whose body is not the documented shape.
        case malformed
        /// No answer within the timeout.
        case timeout
        /// The endpoint could not be reached.
        case unavailable
    }

    public var kind: Kind
    /// The HTTP status, when there was one.
    public var status: Int?
    public var message: String
    /// What the server asked for in `retry-after` (or `retry-after-ms`).
    public var retryAfter: Duration?

    public init(_ kind: Kind, status: Int? = nil, _ message: String, retryAfter: Duration? = nil) {
        self.kind = kind
        self.status = status
        self.message = message
        self.retryAfter = retryAfter
    }

    /// Whether the same request may succeed later.
    public var isRetryable: Bool {
        switch kind {
        case .rateLimited, .overloaded, .server, .timeout, .unavailable, .malformed: true
        case .authentication, .invalidRequest: false
        }
    }

    public var description: String {
        let status = self.status.map { "HTTP \($0)" }
        return ["brain error (\(kind.rawValue)\(status.map { ", \($0)" } ?? ""))", message].joined(separator: ": ")
    }

    /// What the user can do about it.
    public var hint: String {
        switch kind {
        case .authentication:
            "check the API key (ANTHROPIC_API_KEY or OPENAI_API_KEY), then resume with `corral agent wake SESSION`"
        case .invalidRequest:
            "the brain refused the request; check --model, then resume with `corral agent wake SESSION`"
        case .rateLimited, .overloaded, .server:
            "the brain is busy or failing; resume later with `corral agent wake SESSION`"
        case .malformed:
            "the endpoint did not answer as the API documents; check the base URL, then `corral agent wake SESSION`"
        case .timeout, .unavailable:
            "check the endpoint (ANTHROPIC_BASE_URL or OPENAI_BASE_URL), then `corral agent wake SESSION`"
        }
    }
}
