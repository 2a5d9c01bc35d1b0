import CorralCore
import CorralSession
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import CorralHarness

/// Context from the log: a long session stays within its budget through compactions, the
/// log stays whole and readable, and a woken harness rebuilds the same context from the
/// latest compaction as a full replay of the log would.
@Suite("Context and compaction")
struct ContextTests {
    static let budget = 8_000
    static let turns = 2_000

    @Test("a 2,000-turn session stays within the context budget, and a wake midway rebuilds the same context")
    func longSession() async throws {
        let taken = Mutex(0)
        let failedOnce = Mutex(false)
        let server = try BrainServer(.anthropic) { request in
            if request.isCompaction {
                return .turn(
                    text: "Summary \(request.number): the agent has been reading its own log, one turn at a time.",
                    calls: [])
            }
            let turn = taken.withLock { $0 + 1 }
            // Midway, the brain refuses once: the harness stops, and a new one wakes the session.
            if turn == Self.turns / 2, !failedOnce.withLock({ $0 }) {
                failedOnce.withLock { $0 = true }
                return .status(
                    401, body: #"{"type":"error","error":{"type":"authentication_error","message":"key rotated"}}"#,
                    headers: [:])
            }
            taken.withLock { $0 = turn }
            guard turn <= Self.turns else { return .turn(text: "finished", calls: []) }
            return .turn(text: "Step \(turn).", calls: [("session_events", ["limit": 3])])
        }
        defer { server.stop() }
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            let harness = fixture.harness()
            var configuration = AnthropicBrain.Configuration()
            configuration.baseURL = server.baseURL
            let brain = try AnthropicBrain(configuration: configuration, apiKey: server.apiKey)
            let spec = AgentSpec(
                brain: brain.spec, limits: .init(maxTurns: Self.turns + 10), contextBudget: Self.budget)
            let session = try await harness.create(
                task: "Read the log, turn after turn. The task text to remember: blue-heron-42.", spec: spec)

            await #expect(throws: CorralError.self) { try await harness.run(session, brain: brain) }
            let beforeWake = try await fixture.events(session)
            var replayed = SessionState()
            for event in beforeWake { replayed.apply(event) }
            let loaded = try await SessionLoader(store: fixture.store, session: session).load()
            #expect(loaded.context.messages == replayed.context.messages)
            #expect(loaded.context.tokens == replayed.context.tokens)
            #expect(loaded.head == replayed.head)
            #expect(loaded.turns == replayed.turns)
            #expect(loaded.compactions == replayed.compactions)
            #expect(loaded.task == replayed.task)
            #expect(loaded.firstUserText == replayed.firstUserText)
            #expect(loaded.compactions > 0)

            let outcome = try await harness.run(session, brain: brain)
            #expect(outcome.reason == "end_turn")
            #expect(outcome.text == "finished")

            #expect(server.problems == [])
            let requests = server.requests
            #expect(requests.filter { !$0.isCompaction }.count >= Self.turns)
            let largest = requests.map(\.bytes).max() ?? 0
            #expect(largest / 4 <= Self.budget, "largest request: \(largest) bytes")

            let events = try await fixture.events(session)
            let responses = events.ofType(HarnessEvent.brainResponse)
            #expect(responses.count == Self.turns + 1)
            #expect(responses.allSatisfy { ($0.data["contextTokens"]?.intValue ?? .max) <= Int64(Self.budget) })
            let compactions = events.ofType(HarnessEvent.contextCompacted)
            #expect(compactions.count >= 50)
            #expect(compactions.allSatisfy { ($0.data["tokensAfter"]?.intValue ?? .max) <= Int64(Self.budget) })
            #expect(compactions.allSatisfy { $0.data["summary"]?.stringValue?.hasPrefix("Summary") == true })
            checkIntentsAnswered(events)

            // After a compaction the brain still sees the task, restated with the summary.
            let afterCompaction = try #require(requests.last { !$0.isCompaction })
            let first = afterCompaction.body["messages"]?.arrayValue?.first
            let firstText = first?["content"]?.arrayValue?.first?["text"]?.stringValue ?? ""
            #expect(firstText.contains("blue-heron-42"))
            #expect(firstText.contains("session_events"))

            // The log is whole: every event is there, and the agent's tool reads the oldest.
            #expect(events.map(\.seq) == Array(1...UInt64(events.count)))
            let oldest = try await SessionEventsTool.run(
                store: fixture.store, session: session, input: ["from": 1, "limit": 2])
            #expect(oldest.text.contains("#1 session.created"))
            #expect(oldest.text.contains("blue-heron-42"))
            let filtered = try await SessionEventsTool.run(
                store: fixture.store, session: session, input: ["types": ["context.compacted"], "limit": 2])
            #expect(filtered.text.components(separatedBy: "context.compacted").count - 1 == 2)
        }
    }

    @Test("a tool output larger than the context allows is cut in the context and kept whole in the log")
    func largeOutputs() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            let harness = fixture.harness()
            let spec = AgentSpec(brain: BrainSpec(provider: .scripted, model: "m"), contextBudget: 8_000)
            let session = try await harness.create(task: "t", spec: spec)
            // Make the log big enough that session_events returns a long text.
            let brain = CheckedBrain(
                ClosureBrain { request in
                    request.turn <= 3
                        ? ClosureBrain.calls([("session_events", ["limit": 100])], turn: request.turn)
                        : ClosureBrain.calls([], text: "ok", turn: request.turn)
                })
            _ = try await harness.run(session, brain: brain)
            #expect(brain.problems == [])
            let events = try await fixture.events(session)
            let longest =
                events.ofType(HarnessEvent.toolResult).compactMap { $0.data["text"]?.stringValue }.map(\.utf8.count)
                .max() ?? 0
            let cap = SessionState().toolResultCap
            let sent = brain.requests.flatMap { $0.messages.flatMap(\.toolResults) }
            if longest > 8_000 / 8 * 4 {
                #expect(sent.contains { $0.text.contains("bytes cut here to fit the context") })
            }
            #expect(sent.allSatisfy { $0.text.utf8.count <= 8_000 / 8 * 4 + 200 })
            #expect(cap > 0)
        }
    }
}
