import CorralCore
import CorralHarness
import Foundation
import Synchronization
import TestSupport

/// A brain API on loopback that replays a conversation, for the harness tests: it speaks
/// Anthropic's Messages API or OpenAI's chat completions, checks every request against the
/// documented shape (`AnthropicShape`, `OpenAIShape`), and answers what the test's
/// `reply` says. A request with any problem is answered 400 and its problems kept, so a
/// harness that sends a malformed transcript fails its test.
final class BrainServer: Sendable {
    enum Provider: Sendable { case anthropic, openai }

    /// What the test's script sees of a request.
    struct Request: Sendable {
        var body: JSONValue
        var bytes: Int
        /// True for a compaction request (tools may not be called).
        var isCompaction: Bool
        /// Assistant messages in the transcript: the turns already taken, when nothing was
        /// compacted.
        var assistantMessages: Int
        /// The text of every tool answer in the transcript, in order.
        var toolResults: [String]
        /// Request number, from 1, counting every request this server took.
        var number: Int
    }

    enum Reply: Sendable {
        /// A successful answer: text and tool calls (name, input), with ids the server makes.
        case turn(text: String?, calls: [(name: String, input: JSONValue)])
        /// An answer with these exact ids.
        case turnWithIDs(text: String?, calls: [(id: String, name: String, input: JSONValue)])
        case status(Int, body: String, headers: [String: String])
        /// Bytes as they are, with status 200.
        case raw(String)
    }

    let provider: Provider
    let apiKey: String
    private let server: StubHTTPServer
    private let state: Log

    final class Log: Sendable {
        let value = Mutex<(problems: [String], requests: [Request])>(([], []))
        func withLock<T>(_ body: (inout (problems: [String], requests: [Request])) -> T) -> T {
            value.withLock { body(&$0) }
        }
    }

    var baseURL: String {
        let port = server.port ?? 0
        return provider == .anthropic ? "http://127.0.0.1:\(port)" : "http://127.0.0.1:\(port)/v1"
    }

    /// Every problem any request had; empty when every request was well formed.
    var problems: [String] { state.withLock { $0.problems } }
    var requests: [Request] { state.withLock { $0.requests } }

    init(
        _ provider: Provider, apiKey: String = "sk-test-\(UUID().uuidString.prefix(8))",
        reply: @escaping @Sendable (Request) -> Reply
    ) throws {
        self.provider = provider
        self.apiKey = apiKey
        let state = Log()
        self.state = state
        let key = apiKey
        server = try StubHTTPServer(loopbackHandler: { raw, connection in
            let problems =
                provider == .anthropic
                ? AnthropicShape.problems(
                    headers: raw.headers, method: raw.method, target: raw.target, body: raw.body, apiKey: key)
                : OpenAIShape.problems(
                    headers: raw.headers, method: raw.method, target: raw.target, body: raw.body, apiKey: key)
            let body = (try? JSONCodec.decode(raw.body)) ?? .null
            let request = BrainServer.describe(
                body, provider: provider, bytes: raw.body.count, number: state.withLock { $0.requests.count + 1 })
            state.withLock {
                $0.requests.append(request)
                $0.problems += problems.map { "request \(request.number): \($0)" }
            }
            guard problems.isEmpty else {
                BrainServer.respond(
                    connection, status: 400, headers: ["Content-Type": "application/json"],
                    body: JSONCodec.string([
                        "type": "error",
                        "error": [
                            "type": "invalid_request_error", "message": .string(problems.joined(separator: "; ")),
                        ],
                    ]))
                return true
            }
            BrainServer.write(reply(request), provider: provider, request: request, to: connection)
            return true
        })
    }

    func stop() { server.stop() }

    static func describe(_ body: JSONValue, provider: Provider, bytes: Int, number: Int) -> Request {
        let messages = body["messages"]?.arrayValue ?? []
        var results: [String] = []
        for message in messages {
            if provider == .openai {
                if message["role"]?.stringValue == "tool" { results.append(message["content"]?.stringValue ?? "") }
            } else {
                for block in message["content"]?.arrayValue ?? [] where block["type"]?.stringValue == "tool_result" {
                    results.append(block["content"]?.stringValue ?? "")
                }
            }
        }
        let compaction =
            provider == .anthropic
            ? body["tool_choice"]?["type"]?.stringValue == "none" : body["tool_choice"]?.stringValue == "none"
        return Request(
            body: body, bytes: bytes, isCompaction: compaction,
            assistantMessages: messages.filter { $0["role"]?.stringValue == "assistant" }.count, toolResults: results,
            number: number)
    }

    /// The whole response in one write: a head and a body sent apart meet Nagle's algorithm
    /// and the client's delayed ACK, and every exchange would take 40 ms.
    static func respond(_ connection: StubConnection, status: Int, headers: [String: String] = [:], body: String) {
        var text = "HTTP/1.1 \(status) Stub\r\nContent-Length: \(body.utf8.count)\r\n"
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) { text += "\(name): \(value)\r\n" }
        connection.write(text + "\r\n" + body)
    }

    static func write(_ reply: Reply, provider: Provider, request: Request, to connection: StubConnection) {
        switch reply {
        case .status(let status, let body, let headers):
            respond(
                connection, status: status,
                headers: headers.merging(["Content-Type": "application/json"]) { a, _ in a }, body: body)
        case .raw(let text):
            respond(connection, status: 200, headers: ["Content-Type": "application/json"], body: text)
        case .turn(let text, let calls):
            let withIDs = calls.enumerated().map {
                (id: "toolu_r\(request.number)_\($0.offset + 1)", name: $0.element.name, input: $0.element.input)
            }
            write(.turnWithIDs(text: text, calls: withIDs), provider: provider, request: request, to: connection)
        case .turnWithIDs(let text, let calls):
            let inputTokens = request.bytes / 4
            switch provider {
            case .anthropic:
                var content: [JSONValue] = []
                if let text { content.append(["type": "text", "text": .string(text)]) }
                for call in calls {
                    content.append([
                        "type": "tool_use", "id": .string(call.id), "name": .string(call.name), "input": call.input,
                    ])
                }
                let body: JSONValue = [
                    "id": .string("msg_\(request.number)"), "type": "message", "role": "assistant",
                    "model": "claude-test",
                    "content": .array(content), "stop_reason": calls.isEmpty ? "end_turn" : "tool_use",
                    "stop_sequence": nil,
                    "usage": ["input_tokens": .int(Int64(inputTokens)), "output_tokens": 20],
                ]
                respond(
                    connection, status: 200, headers: ["Content-Type": "application/json"], body: JSONCodec.string(body)
                )
            case .openai:
                var message: [String: JSONValue] = ["role": "assistant", "content": text.map { .string($0) } ?? .null]
                if !calls.isEmpty {
                    message["tool_calls"] = .array(
                        calls.map { call in
                            [
                                "id": .string(call.id), "type": "function",
                                "function": [
                                    "name": .string(call.name), "arguments": .string(JSONCodec.string(call.input)),
                                ],
                            ]
                        })
                }
                let body: JSONValue = [
                    "id": .string("chatcmpl-\(request.number)"), "object": "chat.completion", "created": 0,
                    "model": "gpt-test",
                    "choices": [
                        [
                            "index": 0, "message": .object(message),
                            "finish_reason": calls.isEmpty ? "stop" : "tool_calls",
                        ]
                    ],
                    "usage": [
                        "prompt_tokens": .int(Int64(inputTokens)), "completion_tokens": 20,
                        "total_tokens": .int(Int64(inputTokens + 20)),
                    ],
                ]
                respond(
                    connection, status: 200, headers: ["Content-Type": "application/json"], body: JSONCodec.string(body)
                )
            }
        }
    }
}
