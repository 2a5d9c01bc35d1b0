import CorralCore
import CorralHarness

/// Checks a request body against the shape a provider documents, and returns every
/// problem found. Strict on purpose: an unknown field, a role out of turn, a tool call left
/// unanswered or an answer to a call that was never made each fail the test that sent it.
enum AnthropicShape {
    static let topLevel: Set<String> = [
        "model", "max_tokens", "messages", "system", "tools", "tool_choice", "temperature", "stop_sequences",
        "metadata",
        "stream", "top_p", "top_k",
    ]
    static let builtinTools: [String: String] = [
        "bash_20250124": "bash", "text_editor_20250728": "str_replace_based_edit_tool",
    ]

    static func problems(headers: [(String, String)], method: String, target: String, body: [UInt8], apiKey: String)
        -> [String]
    {
        var problems: [String] = []
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name }?.1 }
        if method != "POST" { problems.append("method \(method), not POST") }
        if target != "/v1/messages" { problems.append("path \(target), not /v1/messages") }
        if header("x-api-key") != apiKey { problems.append("x-api-key is missing or wrong") }
        if header("anthropic-version") != "2023-06-01" {
            problems.append("anthropic-version is \(header("anthropic-version") ?? "missing")")
        }
        if header("content-type")?.hasPrefix("application/json") != true {
            problems.append("content-type is not application/json")
        }
        if header("authorization") != nil { problems.append("an Authorization header was sent to Anthropic") }
        guard let value = try? JSONCodec.decode(body), let object = value.objectValue else {
            return problems + ["the body is not a JSON object"]
        }
        return problems + self.problems(object)
    }

    static func problems(_ object: [String: JSONValue]) -> [String] {
        var problems: [String] = []
        for key in object.keys.sorted() where !topLevel.contains(key) { problems.append("unknown field '\(key)'") }
        if object["model"]?.stringValue?.isEmpty != false { problems.append("model is missing") }
        if (object["max_tokens"]?.intValue ?? 0) < 1 { problems.append("max_tokens is missing or not positive") }
        switch object["system"] {
        case nil, .string?: break
        case .array(let blocks)?:
            if !blocks.allSatisfy({ $0["type"]?.stringValue == "text" && $0["text"]?.stringValue != nil }) {
                problems.append("system blocks must be text blocks")
            }
        default: problems.append("system must be a string or text blocks")
        }
        var toolNames: Set<String> = []
        for (index, tool) in (object["tools"]?.arrayValue ?? []).enumerated() {
            guard let fields = tool.objectValue, let name = fields["name"]?.stringValue else {
                problems.append("tool \(index) has no name")
                continue
            }
            if !toolNames.insert(name).inserted { problems.append("tool name '\(name)' declared twice") }
            if let type = fields["type"]?.stringValue, type != "custom" {
                guard let expected = builtinTools[type] else {
                    problems.append("tool '\(name)' has an unknown type '\(type)'")
                    continue
                }
                if name != expected { problems.append("built-in tool \(type) must be named \(expected), not \(name)") }
                let allowed: Set<String> =
                    type.hasPrefix("text_editor")
                    ? ["type", "name", "max_characters", "cache_control"] : ["type", "name", "cache_control"]
                for key in fields.keys.sorted() where !allowed.contains(key) {
                    problems.append("built-in tool \(type) cannot take '\(key)'")
                }
            } else {
                if name.range(of: "^[a-zA-Z0-9_-]{1,64}$", options: .regularExpression) == nil {
                    problems.append("invalid tool name '\(name)'")
                }
                guard fields["input_schema"]?["type"]?.stringValue == "object" else {
                    problems.append("custom tool '\(name)' has no input_schema of type object")
                    continue
                }
                for key in fields.keys.sorted()
                where !["name", "description", "input_schema", "type", "cache_control"].contains(key) {
                    problems.append("custom tool '\(name)' has an unknown field '\(key)'")
                }
            }
        }
        if let choice = object["tool_choice"] {
            let type = choice["type"]?.stringValue ?? ""
            if !["auto", "any", "none", "tool"].contains(type) {
                problems.append("tool_choice type '\(type)' is invalid")
            }
            if object["tools"] == nil { problems.append("tool_choice without tools") }
        }
        guard let messages = object["messages"]?.arrayValue, !messages.isEmpty else {
            return problems + ["messages is missing or empty"]
        }
        var seenIDs: Set<String> = []
        var expectedResults: [String]?
        for (index, message) in messages.enumerated() {
            let at = "messages[\(index)]"
            guard let fields = message.objectValue, let role = fields["role"]?.stringValue else {
                problems.append("\(at) has no role")
                continue
            }
            for key in fields.keys.sorted() where !["role", "content"].contains(key) {
                problems.append("\(at) has unknown field '\(key)'")
            }
            guard role == "user" || role == "assistant" else {
                problems.append("\(at) has role '\(role)'")
                continue
            }
            if index == 0 && role != "user" { problems.append("the first message must be the user's") }
            if index > 0, messages[index - 1]["role"]?.stringValue == role {
                problems.append("\(at): two \(role) messages in a row")
            }
            var blocks: [JSONValue]
            switch fields["content"] {
            case .string(let text)?:
                if text.isEmpty { problems.append("\(at) has empty content") }
                blocks = [["type": "text", "text": .string(text)]]
            case .array(let items)?:
                if items.isEmpty { problems.append("\(at) has empty content") }
                blocks = items
            default:
                problems.append("\(at) has no content")
                blocks = []
            }
            // The answers to the previous assistant message's tool calls come first, all of them.
            if let expected = expectedResults {
                let leading = blocks.prefix { $0["type"]?.stringValue == "tool_result" }.compactMap {
                    $0["tool_use_id"]?.stringValue
                }
                if role != "user" {
                    problems.append("\(at): tool calls \(expected) are not answered by the next message")
                }
                if Set(leading) != Set(expected) || leading.count != expected.count {
                    problems.append(
                        "\(at): tool results \(leading) do not answer the tool calls \(expected) exactly once each")
                }
                expectedResults = nil
            }
            var uses: [String] = []
            var sawNonResult = false
            for (blockIndex, block) in blocks.enumerated() {
                let place = "\(at).content[\(blockIndex)]"
                switch block["type"]?.stringValue {
                case "text":
                    if block["text"]?.stringValue?.isEmpty != false { problems.append("\(place): empty text block") }
                    sawNonResult = true
                case "tool_use":
                    if role != "assistant" { problems.append("\(place): tool_use in a user message") }
                    guard let id = block["id"]?.stringValue, !id.isEmpty, let name = block["name"]?.stringValue else {
                        problems.append("\(place): tool_use without id or name")
                        continue
                    }
                    if block["input"]?.objectValue == nil {
                        problems.append("\(place): tool_use input is not an object")
                    }
                    if !seenIDs.insert(id).inserted { problems.append("\(place): tool_use id \(id) used twice") }
                    // A name the tools do not declare is not refused: the history holds what the model said.
                    _ = name
                    uses.append(id)
                case "tool_result":
                    if role != "user" { problems.append("\(place): tool_result in an assistant message") }
                    if sawNonResult { problems.append("\(place): tool_result after other content") }
                    guard let id = block["tool_use_id"]?.stringValue else {
                        problems.append("\(place): tool_result without tool_use_id")
                        continue
                    }
                    let previous = index > 0 ? (messages[index - 1]["content"]?.arrayValue ?? []) : []
                    if !previous.contains(where: {
                        $0["type"]?.stringValue == "tool_use" && $0["id"]?.stringValue == id
                    }) {
                        problems.append("\(place): tool_result for \(id), which the previous message did not call")
                    }
                    switch block["content"] {
                    case .string?, .array?: break
                    default: problems.append("\(place): tool_result content must be a string or blocks")
                    }
                    if let flag = block["is_error"], flag.boolValue == nil {
                        problems.append("\(place): is_error is not a boolean")
                    }
                default:
                    problems.append("\(place): unexpected block type \(block["type"]?.stringValue ?? "none")")
                }
            }
            if !uses.isEmpty { expectedResults = uses }
        }
        if let expected = expectedResults {
            problems.append("tool calls \(expected) of the last message are never answered")
        }
        if messages.last?["role"]?.stringValue != "user" { problems.append("the last message is not the user's") }
        return problems
    }
}

enum OpenAIShape {
    static let topLevel: Set<String> = [
        "model", "messages", "tools", "tool_choice", "max_tokens", "max_completion_tokens", "temperature", "top_p",
        "stream",
        "stop", "parallel_tool_calls", "user", "seed",
    ]

    static func problems(headers: [(String, String)], method: String, target: String, body: [UInt8], apiKey: String)
        -> [String]
    {
        var problems: [String] = []
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name }?.1 }
        if method != "POST" { problems.append("method \(method), not POST") }
        if target != "/v1/chat/completions" { problems.append("path \(target), not /v1/chat/completions") }
        if header("authorization") != "Bearer \(apiKey)" { problems.append("Authorization is missing or wrong") }
        if header("x-api-key") != nil { problems.append("an x-api-key header was sent to an OpenAI endpoint") }
        guard let value = try? JSONCodec.decode(body), let object = value.objectValue else {
            return problems + ["the body is not a JSON object"]
        }
        return problems + self.problems(object)
    }

    static func problems(_ object: [String: JSONValue]) -> [String] {
        var problems: [String] = []
        for key in object.keys.sorted() where !topLevel.contains(key) { problems.append("unknown field '\(key)'") }
        if object["model"]?.stringValue?.isEmpty != false { problems.append("model is missing") }
        var functions: Set<String> = []
        for (index, tool) in (object["tools"]?.arrayValue ?? []).enumerated() {
            guard tool["type"]?.stringValue == "function", let function = tool["function"],
                let name = function["name"]?.stringValue
            else {
                problems.append("tools[\(index)] is not {type: function, function: {name, parameters}}")
                continue
            }
            if !functions.insert(name).inserted { problems.append("function '\(name)' declared twice") }
            if function["parameters"]?["type"]?.stringValue != "object" {
                problems.append("function '\(name)' parameters are not an object schema")
            }
        }
        switch object["tool_choice"] {
        case nil, .object?: break
        case .string(let choice)?:
            if !["auto", "none", "required"].contains(choice) { problems.append("tool_choice '\(choice)' is invalid") }
        default: problems.append("tool_choice is invalid")
        }
        guard let messages = object["messages"]?.arrayValue, !messages.isEmpty else {
            return problems + ["messages is missing or empty"]
        }
        var open: [String] = []  // calls not yet answered
        var callIDs: Set<String> = []
        var previousRole: String?
        for (index, message) in messages.enumerated() {
            let at = "messages[\(index)]"
            let role = message["role"]?.stringValue ?? ""
            if !open.isEmpty && role != "tool" {
                problems.append("\(at): tool calls \(open) are not answered before a \(role) message")
                open = []
            }
            switch role {
            case "system":
                if index != 0 { problems.append("\(at): a system message after the start") }
                if message["content"]?.stringValue == nil { problems.append("\(at): system content is not a string") }
            case "user":
                if message["content"]?.stringValue?.isEmpty != false {
                    problems.append("\(at): user content is empty or not a string")
                }
            case "assistant":
                let calls = message["tool_calls"]?.arrayValue ?? []
                switch message["content"] {
                case .string?: break
                case .null?, nil:
                    if calls.isEmpty {
                        problems.append("\(at): an assistant message with neither content nor tool calls")
                    }
                default: problems.append("\(at): assistant content is neither a string nor null")
                }
                if previousRole == "assistant" { problems.append("\(at): two assistant messages in a row") }
                for call in calls {
                    guard let id = call["id"]?.stringValue, !id.isEmpty, call["type"]?.stringValue == "function",
                        let name = call["function"]?["name"]?.stringValue,
                        let arguments = call["function"]?["arguments"]?.stringValue
                    else {
                        problems.append("\(at): a tool call is not {id, type: function, function: {name, arguments}}")
                        continue
                    }
                    _ = name
                    if !callIDs.insert(id).inserted { problems.append("\(at): tool call id \(id) used twice") }
                    if arguments.isEmpty { problems.append("\(at): empty arguments for \(id)") }
                    open.append(id)
                }
            case "tool":
                guard let id = message["tool_call_id"]?.stringValue, let position = open.firstIndex(of: id) else {
                    problems.append(
                        "\(at): a tool message answers \(message["tool_call_id"]?.stringValue ?? "nothing"), which is not an open call"
                    )
                    continue
                }
                open.remove(at: position)
                if message["content"]?.stringValue == nil { problems.append("\(at): tool content is not a string") }
            default:
                problems.append("\(at): unknown role '\(role)'")
            }
            previousRole = role
        }
        if !open.isEmpty { problems.append("tool calls \(open) of the last message are never answered") }
        if let last = messages.last?["role"]?.stringValue, last != "user" && last != "tool" {
            problems.append("the last message is \(last), not user or tool")
        }
        return problems
    }
}
