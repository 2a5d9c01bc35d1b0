import CorralCore
import Foundation

/// A brain that replays turns from a file, for demos and tests. Turn N of the session gets
/// line N of the script, whatever the transcript says, so a harness woken after a crash
/// picks up the script where the log ends.
///
/// The file has one JSON object per line (blank lines and lines starting with `#` are
/// skipped): `{"text": "…", "tool_calls": [{"name": "bash", "input": {"command": "ls"}}]}`.
/// A tool call may give its own `"id"`; otherwise it gets `toolu_s<turn>_<index>`. Past the
/// last line the brain ends its turn. docs/harness.md describes the format.
public struct ScriptedBrain: Brain {
    public struct Turn: Sendable, Hashable {
        public var text: String?
        public var toolCalls: [ToolUse]

        public init(text: String?, toolCalls: [ToolUse] = []) {
            self.text = text
            self.toolCalls = toolCalls
        }
    }

    public let turns: [Turn]
    public let spec: BrainSpec

    public init(turns: [Turn], name: String = "scripted") {
        self.turns = turns
        self.spec = BrainSpec(provider: .scripted, model: "scripted", script: name)
    }

    /// Reads a script file; errors name the line.
    public init(contentsOf path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CorralError(
                .notFound, "cannot read the brain script \(path)",
                hint: "pass --brain scripted:FILE with a readable file")
        }
        self.init(turns: try Self.parse(String(decoding: data, as: UTF8.self), source: path), name: path)
    }

    public static func parse(_ text: String, source: String) throws -> [Turn] {
        var turns: [Turn] = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            guard !line.isEmpty, !line.hasPrefix("#") else { continue }
            func bad(_ why: String) -> CorralError {
                CorralError(
                    .invalidArgument, "\(source) line \(index + 1): \(why)",
                    hint: #"each line is {"text": "...", "tool_calls": [{"name": "bash", "input": {"command": "ls"}}]}"#
                )
            }
            let value: JSONValue
            do { value = try JSONCodec.decode(line) } catch { throw bad(error.description) }
            guard let object = value.objectValue else { throw bad("a turn must be a JSON object") }
            if let unknown = object.keys.sorted().first(where: { !["text", "tool_calls"].contains($0) }) {
                throw bad("unknown key '\(unknown)'")
            }
            let text: String?
            switch object["text"] {
            case nil, .null?: text = nil
            case .string(let string)?: text = string
            default: throw bad("'text' must be a string")
            }
            var calls: [ToolUse] = []
            switch object["tool_calls"] {
            case nil, .null?: break
            case .array(let items)?:
                for (callIndex, item) in items.enumerated() {
                    guard let name = item["name"]?.stringValue, !name.isEmpty else {
                        throw bad("tool call \(callIndex + 1) has no 'name'")
                    }
                    let input = item["input"] ?? [:]
                    let id = item["id"]?.stringValue ?? "toolu_s\(turns.count + 1)_\(callIndex + 1)"
                    calls.append(ToolUse(id: id, name: name, input: input))
                }
            default: throw bad("'tool_calls' must be an array")
            }
            guard text != nil || !calls.isEmpty else { throw bad("a turn needs 'text' or 'tool_calls'") }
            turns.append(Turn(text: text, toolCalls: calls))
        }
        guard !turns.isEmpty else {
            throw CorralError(
                .invalidArgument, "the brain script \(source) has no turns", hint: "write one JSON object per line")
        }
        return turns
    }

    public func respond(to request: BrainRequest) async throws -> BrainResponse {
        let input = request.messages.reduce(0) { $0 + $1.estimatedTokens }
        if request.purpose == .compaction {
            let summary =
                "Scripted summary of \(request.messages.count) earlier messages (turns before \(request.turn))."
            return BrainResponse(
                content: [.text(summary)], stopReason: "end_turn", model: "scripted",
                usage: .init(inputTokens: input, outputTokens: summary.utf8.count / 4))
        }
        guard request.turn >= 1, request.turn <= turns.count else {
            return BrainResponse(
                content: [.text("(the script has no more turns)")], stopReason: "end_turn", model: "scripted",
                usage: .init(inputTokens: input, outputTokens: 8))
        }
        let turn = turns[request.turn - 1]
        var content: [ContentBlock] = []
        if let text = turn.text { content.append(.text(text)) }
        content += turn.toolCalls.map { .toolUse($0) }
        return BrainResponse(
            content: content, stopReason: turn.toolCalls.isEmpty ? "end_turn" : "tool_use", model: "scripted",
            id: "scripted-\(request.turn)", usage: .init(inputTokens: input, outputTokens: 16))
    }
}
