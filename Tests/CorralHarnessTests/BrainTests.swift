import CorralCore
import CorralSession
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import CorralHarness

/// The Anthropic and OpenAI brains against the scripted brain server: the documented request
/// shapes, tool calls and answers, and every way a brain call fails.
@Suite("Brains over HTTP")
struct BrainTests {
    @Test("keys: the environment first, then the store by the API's host (with its port)")
    func credentialOrder() async throws {
        let asked = Mutex<[String]>([])
        let stored: @Sendable (String) throws -> String? = { host in
            asked.withLock { $0.append(host) }
            return host == "api.anthropic.com" || host == "127.0.0.1:9999" ? "stored-\(host)" : nil
        }
        let bare = EnvironmentCredentials(environment: ["ANTHROPIC_API_KEY": ""], storedKey: stored)
        #expect(try await bare.apiKey(for: .anthropic) == "stored-api.anthropic.com")
        #expect(try await bare.apiKey(for: .openai) == nil)
        #expect(try await bare.apiKey(for: .scripted) == nil)
        let local = EnvironmentCredentials(
            environment: ["ANTHROPIC_BASE_URL": "http://127.0.0.1:9999", "OPENAI_API_KEY": "env-key"], storedKey: stored
        )
        #expect(try await local.apiKey(for: .anthropic) == "stored-127.0.0.1:9999")
        #expect(try await local.apiKey(for: .openai) == "env-key")
        #expect(asked.withLock { $0 } == ["api.anthropic.com", "api.openai.com", "127.0.0.1:9999"])
    }

    static func anthropic(_ server: BrainServer, timeout: Duration = .seconds(30)) throws -> AnthropicBrain {
        var configuration = AnthropicBrain.Configuration()
        configuration.baseURL = server.baseURL
        configuration.model = "claude-test"
        configuration.timeout = timeout
        return try AnthropicBrain(configuration: configuration, apiKey: server.apiKey)
    }

    static func openai(_ server: BrainServer) throws -> OpenAIBrain {
        var configuration = OpenAIBrain.Configuration()
        configuration.baseURL = server.baseURL
        configuration.model = "gpt-test"
        return try OpenAIBrain(configuration: configuration, apiKey: server.apiKey)
    }

    /// Two turns of tools that need no sandbox, then an answer.
    static func twoToolTurns(_ request: BrainServer.Request) -> BrainServer.Reply {
        switch request.assistantMessages {
        case 0: .turn(text: "Reading the log.", calls: [("session_events", ["limit": 3]), ("sandboxes", [:])])
        case 1: .turn(text: nil, calls: [("session_events", ["from": 1, "limit": 1])])
        default: .turn(text: "All done.", calls: [])
        }
    }

    @Test(
        "tools run, results answer their tool_use ids, the run ends with the brain's turn",
        arguments: [BrainServer.Provider.anthropic, .openai])
    func conversation(provider: BrainServer.Provider) async throws {
        let server = try BrainServer(provider, reply: Self.twoToolTurns)
        defer { server.stop() }
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            let brain: any Brain = provider == .anthropic ? try Self.anthropic(server) : try Self.openai(server)
            let harness = fixture.harness()
            let session = try await harness.create(task: "look around", spec: AgentSpec(brain: brain.spec))
            let outcome = try await harness.run(session, brain: brain)
            #expect(outcome.reason == "end_turn")
            #expect(outcome.text == "All done.")
            #expect(server.problems == [])
            #expect(server.requests.count == 3)
            let events = try await fixture.events(session)
            #expect(events.ofType(HarnessEvent.toolResult).count == 3)
            #expect(events.ofType(HarnessEvent.toolResult).allSatisfy { $0.data["status"] == "ok" })
            #expect(events.last?.type == HarnessEvent.sessionEnded)
            checkIntentsAnswered(events)
            // The last request carried every answer, tied to its call's id.
            let last = try #require(server.requests.last)
            #expect(last.toolResults.count == 3)
            #expect(last.toolResults[0].contains("#5 tool.intent"))
            #expect(last.toolResults[2].contains("#1 session.created"))
        }
    }

    @Test("a 429 with retry-after and a 529 are retried after the wait asked for; every attempt is an event")
    func retries() async throws {
        let server = try BrainServer(.anthropic) { request in
            switch request.number {
            case 1:
                .status(
                    429, body: #"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
                    headers: ["retry-after": "7"])
            case 2:
                .status(
                    529, body: #"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                    headers: [:])
            case 3: .status(503, body: "upstream gone", headers: ["retry-after-ms": "250"])
            default: .turn(text: "fine now", calls: [])
            }
        }
        defer { server.stop() }
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            let harness = fixture.harness()
            let brain = try Self.anthropic(server)
            let session = try await harness.create(task: "t", spec: AgentSpec(brain: brain.spec))
            let outcome = try await harness.run(session, brain: brain)
            #expect(outcome.reason == "end_turn")
            let errors = try await fixture.events(session).ofType(HarnessEvent.brainError)
            #expect(errors.map { $0.data["kind"] } == ["rate_limited", "overloaded", "server"])
            #expect(errors.map { $0.data["status"] } == [429, 529, 503])
            #expect(errors.allSatisfy { $0.data["final"] == false })
            let waits = fixture.sleeps.recorded
            #expect(waits.count == 3)
            #expect(waits.first == .seconds(7))
            #expect(waits.last == .milliseconds(250))
            // Backoff without retry-after: twice the first step after the second attempt, with jitter.
            #expect(waits[1] >= .microseconds(1600) && waits[1] <= .microseconds(2400))
        }
    }

    @Test("401: not retried, recorded, surfaced with a hint, and the key appears nowhere")
    func unauthorized() async throws {
        let server = try BrainServer(.anthropic, apiKey: "sk-ant-secret-4242") { _ in
            .status(
                401,
                body:
                    #"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key sk-ant-secret-4242"}}"#,
                headers: [:])
        }
        defer { server.stop() }
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            let harness = fixture.harness()
            let brain = try Self.anthropic(server)
            let session = try await harness.create(task: "t", spec: AgentSpec(brain: brain.spec))
            let error = await #expect(throws: CorralError.self) { try await harness.run(session, brain: brain) }
            #expect(error?.code == .permissionDenied)
            #expect(error?.message.contains("authentication") == true)
            #expect(error?.message.contains("resumed") == true)
            #expect(error?.description.contains("sk-ant-secret-4242") == false)
            #expect(error?.hint?.contains("corral agent wake \(session)") == true)
            #expect(server.requests.count == 1)
            let events = try await fixture.events(session)
            #expect(events.ofType(HarnessEvent.brainError).count == 1)
            #expect(events.ofType(HarnessEvent.brainError).first?.data["final"] == true)
            #expect(!events.map(\.jsonLine).joined().contains("sk-ant-secret-4242"))
            #expect(events.last?.type == HarnessEvent.brainError)
        }
    }

    @Test(
        "400 with a message: the provider's message is surfaced and recorded; the session resumes once the brain answers"
    )
    func badRequestThenResume() async throws {
        let healthy = Mutex(false)
        let server = try BrainServer(.openai) { request in
            if !healthy.withLock({ $0 }) {
                return .status(
                    400,
                    body: #"{"error":{"message":"model 'gpt-nope' does not exist","type":"invalid_request_error"}}"#,
                    headers: [:])
            }
            return .turn(text: "answered", calls: [])
        }
        defer { server.stop() }
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            let harness = fixture.harness()
            let brain = try Self.openai(server)
            let session = try await harness.create(task: "t", spec: AgentSpec(brain: brain.spec))
            let error = await #expect(throws: CorralError.self) { try await harness.run(session, brain: brain) }
            #expect(error?.message.contains("model 'gpt-nope' does not exist") == true)
            #expect(error?.code == .invalidArgument)
            healthy.withLock { $0 = true }
            let outcome = try await harness.run(session, brain: brain)
            #expect(outcome.reason == "end_turn")
            let events = try await fixture.events(session)
            #expect(
                events.ofType(HarnessEvent.brainError).first?.data["message"]?.stringValue?.contains("does not exist")
                    == true)
            #expect(events.ofType(HarnessEvent.harnessWoke).count == 2)
            #expect(server.problems == [])
        }
    }

    @Test("malformed answers (not JSON, wrong shape) are retried, then reported as malformed")
    func malformed() async throws {
        let server = try BrainServer(.anthropic) { request in
            request.number % 2 == 1 ? .raw("{this is not json") : .raw(#"{"type":"message","role":"assistant"}"#)
        }
        defer { server.stop() }
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            let harness = fixture.harness { $0.retry.maxAttempts = 3 }
            let brain = try Self.anthropic(server)
            let session = try await harness.create(task: "t", spec: AgentSpec(brain: brain.spec))
            let error = await #expect(throws: CorralError.self) { try await harness.run(session, brain: brain) }
            #expect(error?.message.contains("malformed") == true)
            #expect(error?.message.contains("after 3 attempts") == true)
            let errors = try await fixture.events(session).ofType(HarnessEvent.brainError)
            #expect(errors.count == 3)
            #expect(errors.allSatisfy { $0.data["kind"] == "malformed" })
            #expect(errors[1].data["message"]?.stringValue?.contains("no 'content' array") == true)
            #expect(errors.last?.data["final"] == true)
        }
    }

    @Test("a brain that does not answer in time is a timeout, and retried")
    func timeout() async throws {
        let server = try BrainServer(.anthropic) { request in
            if request.number == 1 { Thread.sleep(forTimeInterval: 2) }
            return .turn(text: "late but here", calls: [])
        }
        defer { server.stop() }
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            let harness = fixture.harness()
            let brain = try Self.anthropic(server, timeout: .milliseconds(300))
            let session = try await harness.create(task: "t", spec: AgentSpec(brain: brain.spec))
            let outcome = try await harness.run(session, brain: brain)
            #expect(outcome.text == "late but here")
            let errors = try await fixture.events(session).ofType(HarnessEvent.brainError)
            #expect(errors.map { $0.data["kind"] } == ["timeout"])
        }
    }

    @Test("retry-after as an HTTP date, and header parsing at its edges")
    func retryAfterParsing() throws {
        let now = Date(timeIntervalSince1970: 1_700_000_000)
        let later = "Tue, 14 Nov 2023 22:13:40 GMT"  // now + 20 s
        #expect(BrainHTTP.retryAfter(["retry-after": later], now: now) == .seconds(20))
        #expect(BrainHTTP.retryAfter(["retry-after": "1.5"], now: now) == .milliseconds(1500))
        #expect(BrainHTTP.retryAfter(["retry-after": "soon"], now: now) == nil)
        #expect(BrainHTTP.retryAfter([:], now: now) == nil)
    }
}
