import CorralCore

/// One message of the conversation with a brain, in corral's provider-neutral form. Each
/// brain adapter turns these into its own wire shape (Anthropic content blocks, OpenAI
/// messages with `tool_calls` and `role: tool`).
public struct TranscriptMessage: Sendable, Hashable {
    public enum Role: String, Sendable, Hashable, Codable {
        case user
        case assistant
    }

    public var role: Role
    public var content: [ContentBlock]

    public init(role: Role, content: [ContentBlock]) {
        self.role = role
        self.content = content
    }

    public static func user(_ text: String) -> TranscriptMessage {
        TranscriptMessage(role: .user, content: [.text(text)])
    }

    public var toolUses: [ToolUse] {
        content.compactMap { if case .toolUse(let use) = $0 { use } else { nil } }
    }

    public var toolResults: [ToolResultBlock] {
        content.compactMap { if case .toolResult(let result) = $0 { result } else { nil } }
    }

    /// The text blocks joined, for display.
    public var text: String {
        content.compactMap { if case .text(let text) = $0 { text } else { nil } }.joined(separator: "\n")
    }
}

public enum ContentBlock: Sendable, Hashable {
    case text(String)
    case toolUse(ToolUse)
    case toolResult(ToolResultBlock)
}

/// A tool call as the brain asked for it.
public struct ToolUse: Sendable, Hashable {
    /// The brain's id for the call (Anthropic `toolu_…`, OpenAI `call_…`); the result must
    /// carry the same one.
    public var id: String
    public var name: String
    /// The input object. When the brain sent arguments that are not a JSON object (an OpenAI
    /// `arguments` string that does not parse), this holds the raw text as a string and
    /// `inputProblem` says what is wrong.
    public var input: JSONValue
    public var inputProblem: String?

    public init(id: String, name: String, input: JSONValue, inputProblem: String? = nil) {
        self.id = id
        self.name = name
        self.input = input
        self.inputProblem = inputProblem
    }
}

/// The answer to one tool call, as the brain sees it.
public struct ToolResultBlock: Sendable, Hashable {
    public var toolUseID: String
    public var text: String
    public var isError: Bool

    public init(toolUseID: String, text: String, isError: Bool) {
        self.toolUseID = toolUseID
        self.text = text
        self.isError = isError
    }
}

// MARK: The neutral JSON form, as stored in events

extension ContentBlock {
    /// `{"type":"text","text":…}`, `{"type":"tool_use","id","name","input"}` or
    /// `{"type":"tool_result","tool_use_id","content","is_error"}`.
    public var jsonValue: JSONValue {
        switch self {
        case .text(let text): ["type": "text", "text": .string(text)]
        case .toolUse(let use):
            use.inputProblem == nil
                ? ["type": "tool_use", "id": .string(use.id), "name": .string(use.name), "input": use.input]
                : [
                    "type": "tool_use", "id": .string(use.id), "name": .string(use.name), "input": use.input,
                    "input_problem": .string(use.inputProblem ?? ""),
                ]
        case .toolResult(let result):
            [
                "type": "tool_result", "tool_use_id": .string(result.toolUseID), "content": .string(result.text),
                "is_error": .bool(result.isError),
            ]
        }
    }

    /// Reads the neutral form back; unknown block types give nil and are dropped.
    public init?(json value: JSONValue) {
        switch value["type"]?.stringValue {
        case "text":
            guard let text = value["text"]?.stringValue else { return nil }
            self = .text(text)
        case "tool_use":
            guard let id = value["id"]?.stringValue, let name = value["name"]?.stringValue else { return nil }
            self = .toolUse(
                ToolUse(
                    id: id, name: name, input: value["input"] ?? [:], inputProblem: value["input_problem"]?.stringValue)
            )
        case "tool_result":
            guard let id = value["tool_use_id"]?.stringValue else { return nil }
            self = .toolResult(
                ToolResultBlock(
                    toolUseID: id, text: value["content"]?.stringValue ?? "",
                    isError: value["is_error"]?.boolValue ?? false))
        default:
            return nil
        }
    }
}

extension TranscriptMessage {
    var jsonValue: JSONValue {
        ["role": .string(role.rawValue), "content": .array(content.map(\.jsonValue))]
    }

    /// What the message costs in a context, estimated at four bytes of its JSON a token,
    /// plus a little for the framing every provider adds.
    var estimatedTokens: Int {
        JSONCodec.encode(jsonValue).count / 4 + 4
    }
}
