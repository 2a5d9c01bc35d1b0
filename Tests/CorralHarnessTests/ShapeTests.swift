import CorralCore
import Testing

@testable import CorralHarness

/// The brain server's checks are what make the other tests able to fail: these show that a
/// malformed transcript is caught, and that what the harness sends is not.
@Suite("Request shape checks")
struct ShapeTests {
    static let tools: [ToolDeclaration] = ToolCatalog(
        provider: .anthropic, handTools: SandboxHands(provisioner: { throw CorralError(.unavailable, "unused") }).tools
    ).declarations

    static func request(_ messages: [TranscriptMessage]) -> BrainRequest {
        BrainRequest(system: "s", messages: messages, tools: tools, purpose: .turn, turn: 1, maxOutputTokens: 100)
    }

    static let use = ToolUse(id: "toolu_1", name: "bash", input: ["command": "ls"])

    @Test("a well-formed tool exchange passes both providers' checks")
    func wellFormed() throws {
        let request = Self.request([
            .user("task"),
            TranscriptMessage(role: .assistant, content: [.text("looking"), .toolUse(Self.use)]),
            TranscriptMessage(
                role: .user, content: [.toolResult(ToolResultBlock(toolUseID: "toolu_1", text: "a b", isError: false))]),
        ])
        let anthropic = try #require(try JSONCodec.decode(AnthropicBrain.encode(request, model: "m")).objectValue)
        #expect(AnthropicShape.problems(anthropic) == [])
        let openai = try #require(
            try JSONCodec.decode(OpenAIBrain.encode(request, model: "m", maxTokensField: "max_tokens")).objectValue)
        #expect(OpenAIShape.problems(openai) == [])
    }

    @Test("an unanswered tool call, a stray result and roles out of turn are each caught")
    func malformed() throws {
        let unanswered = Self.request([
            .user("task"), TranscriptMessage(role: .assistant, content: [.toolUse(Self.use)]), .user("go on"),
        ])
        let stray = Self.request([
            .user("task"), TranscriptMessage(role: .assistant, content: [.text("hi")]),
            TranscriptMessage(
                role: .user, content: [.toolResult(ToolResultBlock(toolUseID: "toolu_9", text: "x", isError: false))]),
        ])
        for request in [unanswered, stray] {
            let anthropic = try #require(try JSONCodec.decode(AnthropicBrain.encode(request, model: "m")).objectValue)
            #expect(!AnthropicShape.problems(anthropic).isEmpty)
            let openai = try #require(
                try JSONCodec.decode(OpenAIBrain.encode(request, model: "m", maxTokensField: "max_tokens")).objectValue)
            #expect(!OpenAIShape.problems(openai).isEmpty)
        }
        // Hand-written wire bodies the encoders would never make.
        let twoUsers: JSONValue = [
            "model": "m", "max_tokens": 10,
            "messages": [["role": "user", "content": "a"], ["role": "user", "content": "b"]],
        ]
        #expect(
            AnthropicShape.problems(try #require(twoUsers.objectValue)).contains { $0.contains("two user messages") })
        let mismatched: JSONValue = [
            "model": "m", "max_tokens": 10, "tools": [["type": "bash_20250124", "name": "bash"]],
            "messages": [
                ["role": "user", "content": "a"],
                ["role": "assistant", "content": [["type": "tool_use", "id": "t1", "name": "bash", "input": [:]]]],
                [
                    "role": "user",
                    "content": [
                        ["type": "text", "text": "x"], ["type": "tool_result", "tool_use_id": "t1", "content": "y"],
                    ],
                ],
            ],
        ]
        #expect(!AnthropicShape.problems(try #require(mismatched.objectValue)).isEmpty)
        let badBuiltin: JSONValue = [
            "model": "m", "max_tokens": 10,
            "tools": [["type": "bash_20250124", "name": "bash", "input_schema": ["type": "object"]]],
            "messages": [["role": "user", "content": "a"]],
        ]
        #expect(AnthropicShape.problems(try #require(badBuiltin.objectValue)).contains { $0.contains("cannot take") })
        let openaiWrongID: JSONValue = [
            "model": "m",
            "tools": [["type": "function", "function": ["name": "bash", "parameters": ["type": "object"]]]],
            "messages": [
                ["role": "user", "content": "a"],
                [
                    "role": "assistant", "content": nil,
                    "tool_calls": [["id": "c1", "type": "function", "function": ["name": "bash", "arguments": "{}"]]],
                ],
                ["role": "tool", "tool_call_id": "c2", "content": "x"],
            ],
        ]
        #expect(!OpenAIShape.problems(try #require(openaiWrongID.objectValue)).isEmpty)
    }

    @Test("the built-in tools are declared in Anthropic's shapes, corral's with input schemas")
    func declarations() throws {
        let body = try JSONCodec.decode(AnthropicBrain.encode(Self.request([.user("task")]), model: "m"))
        let tools = try #require(body["tools"]?.arrayValue)
        #expect(tools.contains(["type": "bash_20250124", "name": "bash"]))
        #expect(tools.contains(["type": "text_editor_20250728", "name": "str_replace_based_edit_tool"]))
        let events = try #require(tools.first { $0["name"] == "session_events" })
        #expect(events["input_schema"]?["type"] == "object")
        #expect(body["anthropic-version"] == nil)
    }
}

/// How a call reaches a named sandbox, per provider.
@Suite("Tool routing")
struct RoutingTests {
    static let tools = SandboxHands(provisioner: { throw CorralError(.unavailable, "unused") }).tools

    @Test("OpenAI-style tools take a sandbox field; Anthropic's built-in shapes go through sandbox_tool")
    func namedSandboxes() throws {
        let openai = ToolCatalog(provider: .openai, handTools: Self.tools)
        #expect(!openai.names.contains("sandbox_tool"))
        let bash = try #require(openai.declarations.first { $0.name == "bash" })
        #expect(bash.inputSchema["properties"]?["sandbox"]?["type"] == "string")
        guard
            case .hand(let name, let tool, let input) = openai.route(
                ToolUse(id: "c1", name: "bash", input: ["command": "ls", "sandbox": "tests"]))
        else {
            Issue.record("bash with a sandbox field did not route to a hand")
            return
        }
        #expect(name == "tests" && tool == "bash")
        #expect(input == ["command": "ls"])

        let anthropic = ToolCatalog(provider: .anthropic, handTools: Self.tools)
        #expect(anthropic.names.contains("sandbox_tool"))
        #expect(anthropic.declarations.first { $0.name == "bash" }?.anthropicType == "bash_20250124")
        let wrapped = ToolUse(
            id: "t1", name: "sandbox_tool",
            input: [
                "sandbox": "docs", "tool": "str_replace_based_edit_tool",
                "input": ["command": "view", "path": "/workspace"],
            ])
        guard case .hand(let docs, let editor, _) = anthropic.route(wrapped) else {
            Issue.record("sandbox_tool did not route to a hand")
            return
        }
        #expect(docs == "docs" && editor == "str_replace_based_edit_tool")
        #expect(anthropic.isIdempotent(anthropic.route(wrapped)))
        guard case .hand(let main, _, _) = anthropic.route(ToolUse(id: "t2", name: "bash", input: ["command": "ls"]))
        else {
            Issue.record("bash did not route to a hand")
            return
        }
        #expect(main == "main")
        #expect(!anthropic.isIdempotent(anthropic.route(ToolUse(id: "t3", name: "bash", input: ["command": "cat x"]))))
    }
}
