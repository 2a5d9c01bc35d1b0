import CorralCore
import CurlHTTP
import Logging

/// OpenAI-compatible chat completions: `POST {base}/chat/completions` with a bearer key,
/// function tools, `tool_calls` on assistant messages and `role: tool` answers carrying the
/// `tool_call_id`.
public final class OpenAIBrain: Brain {
    public struct Configuration: Sendable {
        /// Base URL including `/v1` (`OPENAI_BASE_URL`), as OpenAI's SDKs take it.
        public var baseURL: String = "https://api.openai.com/v1"
        public var model: String = BrainSpec.defaultOpenAIModel
        public var timeout: Duration = .seconds(600)
        /// `max_tokens` is what compatible servers take; OpenAI's reasoning models want
        /// `max_completion_tokens`.
        public var maxTokensField = "max_tokens"

        public init() {}
    }

    public let configuration: Configuration
    public var spec: BrainSpec { BrainSpec(provider: .openai, model: configuration.model) }
    private let http: BrainHTTP
    private let apiKey: String
    private let logger: Logger

    public init(configuration: Configuration, apiKey: String, logger: Logger? = nil) throws {
        self.configuration = configuration
        self.apiKey = apiKey
        self.logger = logger ?? Logger(label: "corral.brain.openai")
        let endpoint = try HTTPEndpoint(parsing: configuration.baseURL)
        self.http = BrainHTTP(
            client: try CurlHTTPClient(endpoint: endpoint), timeout: configuration.timeout, secret: apiKey)
    }

    deinit { http.client.shutdown() }

    public func respond(to request: BrainRequest) async throws -> BrainResponse {
        let body = Self.encode(request, model: configuration.model, maxTokensField: configuration.maxTokensField)
        logger.debug(
            "openai request",
            metadata: ["model": "\(configuration.model)", "bytes": "\(body.count)", "turn": "\(request.turn)"])
        let answer = try await http.postJSON(
            "/chat/completions", headers: ["Authorization": "Bearer \(apiKey)"], body: body)
        return try Self.decode(answer, fallbackModel: configuration.model)
    }

    // MARK: Wire shape

    static func encode(_ request: BrainRequest, model: String, maxTokensField: String) -> [UInt8] {
        var messages: [JSONValue] = []
        if !request.system.isEmpty { messages.append(["role": "system", "content": .string(request.system)]) }
        for message in request.messages {
            switch message.role {
            case .user:
                // Tool answers first, each a message of its own, then any text as a user message.
                for result in message.toolResults {
                    messages.append([
                        "role": "tool", "tool_call_id": .string(result.toolUseID),
                        "content": .string(
                            result.isError
                                ? "[error] " + result.text : (result.text.isEmpty ? "(no output)" : result.text)),
                    ])
                }
                let text = message.text
                if !text.isEmpty || message.toolResults.isEmpty {
                    messages.append(["role": "user", "content": .string(text.isEmpty ? "(empty)" : text)])
                }
            case .assistant:
                var entry: [String: JSONValue] = ["role": "assistant"]
                let text = message.text
                entry["content"] = text.isEmpty ? .null : .string(text)
                let uses = message.toolUses
                if !uses.isEmpty {
                    entry["tool_calls"] = .array(
                        uses.map { use in
                            let arguments: String
                            if use.inputProblem != nil, case .string(let raw) = use.input {
                                arguments = raw
                            } else {
                                arguments = JSONCodec.string(use.input)
                            }
                            return [
                                "id": .string(use.id), "type": "function",
                                "function": ["name": .string(use.name), "arguments": .string(arguments)],
                            ]
                        })
                } else if text.isEmpty {
                    entry["content"] = "(empty)"
                }
                messages.append(.object(entry))
            }
        }
        var body: [String: JSONValue] = [
            "model": .string(model), "messages": .array(messages),
            maxTokensField: .int(Int64(request.maxOutputTokens)),
        ]
        if !request.tools.isEmpty {
            body["tools"] = .array(
                request.tools.map { tool in
                    [
                        "type": "function",
                        "function": [
                            "name": .string(tool.name), "description": .string(tool.description),
                            "parameters": tool.inputSchema,
                        ],
                    ]
                })
            body["tool_choice"] = request.purpose == .compaction ? "none" : "auto"
        }
        return JSONCodec.encode(.object(body))
    }

    static func decode(_ answer: JSONValue, fallbackModel: String) throws -> BrainResponse {
        guard let choice = answer["choices"]?.arrayValue?.first, let message = choice["message"],
            message.objectValue != nil
        else {
            throw BrainError(.malformed, status: 200, "the answer has no choices[0].message")
        }
        var content: [ContentBlock] = []
        switch message["content"] {
        case .string(let text)?: if !text.isEmpty { content.append(.text(text)) }
        case .null?, nil: break
        case .array(let parts)?:
            // Some compatible servers answer with content parts.
            let text = parts.compactMap { $0["text"]?.stringValue }.joined()
            if !text.isEmpty { content.append(.text(text)) }
        default:
            throw BrainError(.malformed, status: 200, "message.content is neither a string nor null")
        }
        for call in message["tool_calls"]?.arrayValue ?? [] {
            guard let id = call["id"]?.stringValue, !id.isEmpty, let function = call["function"],
                let name = function["name"]?.stringValue
            else {
                throw BrainError(.malformed, status: 200, "a tool call lacks its id or function name")
            }
            let raw = function["arguments"]?.stringValue ?? "{}"
            if let parsed = try? JSONCodec.decode(raw), parsed.objectValue != nil {
                content.append(.toolUse(ToolUse(id: id, name: name, input: parsed)))
            } else {
                content.append(
                    .toolUse(
                        ToolUse(
                            id: id, name: name, input: .string(raw), inputProblem: "the arguments are not a JSON object"
                        )))
            }
        }
        let finish = choice["finish_reason"]?.stringValue
        let stop: String
        switch finish {
        case "tool_calls", "function_call": stop = "tool_use"
        case "length": stop = "max_tokens"
        case "stop", nil:
            stop = content.contains { if case .toolUse = $0 { true } else { false } } ? "tool_use" : "end_turn"
        case let other?: stop = other
        }
        return BrainResponse(
            content: content, stopReason: stop, model: answer["model"]?.stringValue ?? fallbackModel,
            id: answer["id"]?.stringValue,
            usage: BrainResponse.Usage(
                inputTokens: answer["usage"]?["prompt_tokens"]?.intOrNil ?? 0,
                outputTokens: answer["usage"]?["completion_tokens"]?.intOrNil ?? 0))
    }
}
