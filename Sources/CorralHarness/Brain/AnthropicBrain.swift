import CorralCore
import CurlHTTP
import Logging

/// The Anthropic Messages API: `POST /v1/messages` with `x-api-key` and
/// `anthropic-version: 2023-06-01`. The bash and text editor tools are declared in the
/// shapes Anthropic defines (`bash_20250124`, `text_editor_20250728`), corral's own tools
/// with an `input_schema`.
public final class AnthropicBrain: Brain {
    public struct Configuration: Sendable {
        /// Base URL without `/v1` (`ANTHROPIC_BASE_URL`), as Anthropic's SDKs take it.
        public var baseURL: String = "https://api.anthropic.com"
        public var model: String = BrainSpec.defaultAnthropicModel
        /// Per call, covering the whole answer.
        public var timeout: Duration = .seconds(600)
        public var version = "2023-06-01"

        public init() {}
    }

    public let configuration: Configuration
    public var spec: BrainSpec { BrainSpec(provider: .anthropic, model: configuration.model) }
    private let http: BrainHTTP
    private let apiKey: String
    private let logger: Logger

    /// `apiKey` is sent in `x-api-key` and nowhere else: not logged, not recorded.
    public init(configuration: Configuration, apiKey: String, logger: Logger? = nil) throws {
        self.configuration = configuration
        self.apiKey = apiKey
        self.logger = logger ?? Logger(label: "corral.brain.anthropic")
        let endpoint = try HTTPEndpoint(parsing: configuration.baseURL)
        self.http = BrainHTTP(
            client: try CurlHTTPClient(endpoint: endpoint), timeout: configuration.timeout, secret: apiKey)
    }

    deinit { http.client.shutdown() }

    public func respond(to request: BrainRequest) async throws -> BrainResponse {
        let body = Self.encode(request, model: configuration.model)
        let headers: HTTPHeaders = ["x-api-key": apiKey, "anthropic-version": configuration.version]
        logger.debug(
            "anthropic request",
            metadata: ["model": "\(configuration.model)", "bytes": "\(body.count)", "turn": "\(request.turn)"])
        let answer = try await http.postJSON("/v1/messages", headers: headers, body: body)
        return try Self.decode(answer, fallbackModel: configuration.model)
    }

    // MARK: Wire shape

    /// The request body. Messages are merged so that roles alternate, tool results come
    /// first in their user message, and no content is empty.
    static func encode(_ request: BrainRequest, model: String) -> [UInt8] {
        var body: [String: JSONValue] = [
            "model": .string(model),
            "max_tokens": .int(Int64(request.maxOutputTokens)),
            "messages": .array(wireMessages(request.messages)),
        ]
        if !request.system.isEmpty { body["system"] = .string(request.system) }
        if !request.tools.isEmpty {
            body["tools"] = .array(request.tools.map(wireTool))
            if request.purpose == .compaction { body["tool_choice"] = ["type": "none"] }
        }
        return JSONCodec.encode(.object(body))
    }

    static func wireTool(_ tool: ToolDeclaration) -> JSONValue {
        if let type = tool.anthropicType {
            return ["type": .string(type), "name": .string(tool.name)]
        }
        return ["name": .string(tool.name), "description": .string(tool.description), "input_schema": tool.inputSchema]
    }

    static func wireMessages(_ messages: [TranscriptMessage]) -> [JSONValue] {
        var merged: [TranscriptMessage] = []
        for message in messages {
            if let last = merged.last, last.role == message.role {
                merged[merged.count - 1].content += message.content
            } else {
                merged.append(message)
            }
        }
        return merged.map { message in
            var blocks: [JSONValue] = []
            if message.role == .user {
                for case .toolResult(let result) in message.content {
                    var block: [String: JSONValue] = [
                        "type": "tool_result", "tool_use_id": .string(result.toolUseID),
                        "content": .string(result.text.isEmpty ? "(no output)" : result.text),
                    ]
                    if result.isError { block["is_error"] = true }
                    blocks.append(.object(block))
                }
            }
            for block in message.content {
                switch block {
                case .text(let text) where !text.isEmpty:
                    blocks.append(["type": "text", "text": .string(text)])
                case .toolUse(let use) where message.role == .assistant:
                    let input: JSONValue = use.input.objectValue != nil ? use.input : [:]
                    blocks.append([
                        "type": "tool_use", "id": .string(use.id), "name": .string(use.name), "input": input,
                    ])
                default:
                    continue
                }
            }
            if blocks.isEmpty { blocks.append(["type": "text", "text": "(empty)"]) }
            return ["role": .string(message.role.rawValue), "content": .array(blocks)]
        }
    }

    static func decode(_ answer: JSONValue, fallbackModel: String) throws -> BrainResponse {
        guard let blocks = answer["content"]?.arrayValue else {
            throw BrainError(.malformed, status: 200, "the answer has no 'content' array")
        }
        var content: [ContentBlock] = []
        for block in blocks {
            switch block["type"]?.stringValue {
            case "text":
                guard let text = block["text"]?.stringValue else {
                    throw BrainError(.malformed, status: 200, "a text block has no 'text' string")
                }
                content.append(.text(text))
            case "tool_use":
                guard let id = block["id"]?.stringValue, !id.isEmpty, let name = block["name"]?.stringValue else {
                    throw BrainError(.malformed, status: 200, "a tool_use block lacks its 'id' or 'name'")
                }
                let input = block["input"] ?? [:]
                content.append(
                    .toolUse(
                        ToolUse(
                            id: id, name: name, input: input,
                            inputProblem: input.objectValue == nil
                                ? "the input is \(input.typeName), not an object" : nil)))
            default:
                // Thinking and server-tool blocks are not used by corral's requests.
                continue
            }
        }
        let usage = BrainResponse.Usage(
            inputTokens: (answer["usage"]?["input_tokens"]?.intOrNil ?? 0)
                + (answer["usage"]?["cache_read_input_tokens"]?.intOrNil ?? 0)
                + (answer["usage"]?["cache_creation_input_tokens"]?.intOrNil ?? 0),
            outputTokens: answer["usage"]?["output_tokens"]?.intOrNil ?? 0)
        let stop =
            answer["stop_reason"]?.stringValue
            ?? (content.contains { if case .toolUse = $0 { true } else { false } } ? "tool_use" : "end_turn")
        return BrainResponse(
            content: content, stopReason: stop, model: answer["model"]?.stringValue ?? fallbackModel,
            id: answer["id"]?.stringValue, usage: usage)
    }
}
