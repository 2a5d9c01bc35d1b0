import CorralCore
import CorralSandbox

/// The tools a brain is offered, and how each call is routed.
///
/// bash and `str_replace_based_edit_tool` run in the sandbox named `main`. To reach another
/// sandbox, a call names it: OpenAI-style function tools take an optional `sandbox` field;
/// Anthropic's built-in tool shapes cannot take extra fields, so corral's own `sandbox_tool`
/// wraps a call for a named sandbox. corral's `session_events` reads the log, `sandboxes`
/// lists the session's sandboxes; neither needs a sandbox.
struct ToolCatalog: Sendable {
    static let defaultHand = "main"
    static let sessionEvents = "session_events"
    static let sandboxTool = "sandbox_tool"
    static let listSandboxes = "sandboxes"

    let handTools: [String: any SandboxTool]
    let declarations: [ToolDeclaration]

    init(provider: BrainSpec.Provider, handTools tools: [any SandboxTool]) {
        var byName: [String: any SandboxTool] = [:]
        for tool in tools where byName[tool.name] == nil { byName[tool.name] = tool }
        self.handTools = byName
        let handNames = tools.map(\.name)
        var declarations: [ToolDeclaration] = []
        for tool in tools {
            var schema = tool.inputSchema
            if provider != .anthropic, case .object(var members) = schema,
                case .object(var properties)? = members["properties"]
            {
                properties["sandbox"] = [
                    "type": "string",
                    "description": "Name of the sandbox to run in (default \"main\"); a new name gets a new sandbox.",
                ]
                members["properties"] = .object(properties)
                schema = .object(members)
            }
            declarations.append(
                ToolDeclaration(
                    name: tool.name, description: tool.description, inputSchema: schema,
                    anthropicType: Self.anthropicTypes[tool.name]))
        }
        declarations.append(
            ToolDeclaration(
                name: Self.sessionEvents,
                description: """
                    Read this session's event log: user messages, brain responses, tool calls and results, sandbox \
                    changes and compactions, by sequence number. Use it to recover details from before a compaction. \
                    Returns up to `limit` events (default 20, at most 100) from seq `from` (default: the latest ones); \
                    `types` keeps only events of those types (such as "tool.result").
                    """,
                inputSchema: [
                    "type": "object",
                    "properties": [
                        "from": ["type": "integer", "minimum": 1, "description": "First seq to read."],
                        "limit": ["type": "integer", "minimum": 1, "maximum": 100, "description": "Events to return."],
                        "types": ["type": "array", "items": ["type": "string"], "description": "Event types to keep."],
                    ],
                ]))
        if provider == .anthropic {
            declarations.append(
                ToolDeclaration(
                    name: Self.sandboxTool,
                    description: """
                        Run a tool in a named sandbox. Each name is its own sandbox, made on first use; "main" is the \
                        one the bash and str_replace_based_edit_tool tools use. Give the sandbox's name, the tool \
                        (\(handNames.joined(separator: " or "))) and that tool's input.
                        """,
                    inputSchema: [
                        "type": "object",
                        "properties": [
                            "sandbox": [
                                "type": "string", "description": "The sandbox's name, such as \"main\" or \"tests\".",
                            ],
                            "tool": ["type": "string", "enum": .array(handNames.map { .string($0) })],
                            "input": ["type": "object", "description": "The tool's input, as that tool takes it."],
                        ],
                        "required": ["sandbox", "tool", "input"],
                    ]))
        }
        declarations.append(
            ToolDeclaration(
                name: Self.listSandboxes, description: "List this session's sandboxes by name, with their ids.",
                inputSchema: ["type": "object", "properties": [:]]))
        self.declarations = declarations
    }

    static let anthropicTypes = ["bash": "bash_20250124", "str_replace_based_edit_tool": "text_editor_20250728"]

    var names: [String] { declarations.map(\.name) }

    /// What a tool call is, decided from the call alone (so a woken harness decides the same).
    enum Route: Sendable {
        /// Refused before anything runs: an unknown tool or an input that cannot be right.
        case refused(String)
        case sessionEvents(JSONValue)
        case listSandboxes
        case hand(name: String, tool: String, input: JSONValue)
    }

    func route(_ use: ToolUse) -> Route {
        if let problem = use.inputProblem {
            return .refused("\(use.name): \(problem); send the input as a JSON object")
        }
        switch use.name {
        case Self.sessionEvents:
            guard use.input.objectValue != nil else { return .refused("session_events: the input must be an object") }
            return .sessionEvents(use.input)
        case Self.listSandboxes:
            return .listSandboxes
        case Self.sandboxTool:
            guard let name = use.input["sandbox"]?.stringValue else {
                return .refused("sandbox_tool: 'sandbox' (a name such as \"main\") is required")
            }
            guard let tool = use.input["tool"]?.stringValue, handTools[tool] != nil else {
                return .refused(
                    "sandbox_tool: 'tool' must be one of \(handTools.keys.sorted().joined(separator: ", "))")
            }
            guard let input = use.input["input"], input.objectValue != nil else {
                return .refused("sandbox_tool: 'input' must be the tool's input object")
            }
            return handRoute(name: name, tool: tool, input: input)
        default:
            guard handTools[use.name] != nil else {
                return .refused("unknown tool '\(use.name)'; the tools are \(names.joined(separator: ", "))")
            }
            guard case .object(var members) = use.input else {
                return .refused("\(use.name): the input must be a JSON object, got \(use.input.typeName)")
            }
            var name = Self.defaultHand
            if let value = members.removeValue(forKey: "sandbox"), value != .null {
                guard let text = value.stringValue else { return .refused("\(use.name): 'sandbox' must be a name") }
                name = text
            }
            return handRoute(name: name, tool: use.name, input: .object(members))
        }
    }

    private func handRoute(name: String, tool: String, input: JSONValue) -> Route {
        if let problem = Self.problem(withName: name) { return .refused(problem) }
        // Refuse what cannot run before a sandbox is made for it.
        switch tool {
        case "bash":
            let command = input["command"]?.stringValue
            if command == nil, input["restart"]?.boolValue != true {
                return .refused("bash: 'command' (a string) is required")
            }
        case "str_replace_based_edit_tool":
            guard input["command"]?.stringValue != nil else {
                return .refused(
                    "str_replace_based_edit_tool: 'command' (view, create, str_replace or insert) is required")
            }
            guard input["path"]?.stringValue != nil else {
                return .refused("str_replace_based_edit_tool: 'path' is required")
            }
        default:
            break
        }
        return .hand(name: name, tool: tool, input: input)
    }

    /// Whether repeating the call is harmless: reads are, anything that may write is not.
    func isIdempotent(_ route: Route) -> Bool {
        switch route {
        case .refused, .sessionEvents, .listSandboxes: true
        case .hand(_, let tool, let input): handTools[tool]?.isIdempotent(input) ?? false
        }
    }

    /// Sandbox names are short ids: they become parts of event ids and labels.
    static func problem(withName name: String) -> String? {
        let bytes = Array(name.utf8)
        guard (1...32).contains(bytes.count) else {
            return "a sandbox name has 1 to 32 characters, got '\(name.prefix(40))'"
        }
        for (index, byte) in bytes.enumerated() {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): continue
            case UInt8(ascii: "-") where index > 0, UInt8(ascii: "_") where index > 0: continue
            default: return "invalid sandbox name '\(name)': use a-z, 0-9, '-' and '_', starting with a letter or digit"
            }
        }
        return nil
    }
}
