import CorralCore
import CorralSession
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import CorralHarness

/// The loop on real sessions, with brains whose tool calls need no sandbox: the wake rules
/// on logs a crashed harness left, tool calls that cannot run, limits, and fencing.
@Suite("The harness loop")
struct LoopTests {
    static let spec = AgentSpec(brain: BrainSpec(provider: .scripted, model: "closure"))

    /// A session as a harness that died would have left it: these events, appended under
    /// the creation lease.
    static func crafted(_ fixture: HarnessFixture, _ events: [NewEvent]) async throws -> SessionID {
        let info = try await fixture.store.create()
        let lease = try await fixture.store.currentLease(info.id)
        let all =
            [
                NewEvent(type: HarnessEvent.sessionCreated, data: ["agent": spec.jsonValue]),
                NewEvent(type: HarnessEvent.userMessage, data: ["text": "the task"]),
            ] + events
        _ = try await fixture.store.append(info.id, all, expectedSeq: 1, lease: lease)
        return info.id
    }

    static func response(turn: Int, _ calls: [(String, JSONValue)]) -> NewEvent {
        let blocks: [JSONValue] = calls.enumerated().map { index, call in
            ["type": "tool_use", "id": .string("toolu_\(turn)_\(index + 1)"), "name": .string(call.0), "input": call.1]
        }
        return NewEvent(
            type: HarnessEvent.brainResponse,
            data: [
                "turn": .int(Int64(turn)), "content": .array(blocks), "stopReason": "tool_use",
                "usage": ["input": 10, "output": 5],
            ])
    }

    static func intent(turn: Int, index: Int, _ name: String, _ input: JSONValue) -> NewEvent {
        NewEvent(
            type: HarnessEvent.toolIntent,
            data: [
                "turn": .int(Int64(turn)), "index": .int(Int64(index)), "toolUseID": .string("toolu_\(turn)_\(index)"),
                "name": .string(name), "input": input,
            ])
    }

    static let finish = ClosureBrain { request in ClosureBrain.calls([], text: "finished", turn: request.turn) }

    @Test("wake: a read cut short runs again, a write cut short is reported unknown, a call never started runs")
    func wakeRules() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            let session = try await Self.crafted(
                fixture,
                [
                    Self.response(
                        turn: 1,
                        [
                            ("session_events", ["limit": 1]), ("bash", ["command": "echo one >> /workspace/log"]),
                            ("sandboxes", [:]),
                        ]),
                    Self.intent(turn: 1, index: 1, "session_events", ["limit": 1]),
                    Self.intent(turn: 1, index: 2, "bash", ["command": "echo one >> /workspace/log"]),
                ])
            let brain = CheckedBrain(Self.finish)
            let outcome = try await fixture.harness().run(session, brain: brain)
            #expect(outcome.reason == "end_turn")
            #expect(brain.problems == [])
            let events = try await fixture.events(session)
            let woke = try #require(events.ofType(HarnessEvent.harnessWoke).first)
            #expect(woke.data["repairs"]?.arrayValue?.map { $0["action"] } == ["rerun", "unknown", "run"])
            let results = events.ofType(HarnessEvent.toolResult)
            #expect(results.map { $0.data["status"] } == ["ok", "unknown", "ok"])
            #expect(results[0].data["rerun"] == true)
            #expect(results[1].data["text"]?.stringValue?.contains("outcome of this call is unknown") == true)
            // The write was not repeated: no sandbox was ever made for it.
            #expect(events.ofType(HarnessEvent.sandboxProvisioned).isEmpty)
            #expect(events.ofType(HarnessEvent.toolIntent).count == 3)
            checkIntentsAnswered(events)
            // The brain was told, as an error result tied to the call's id.
            let sent = try #require(brain.requests.first?.messages.last?.toolResults)
            #expect(sent.map(\.toolUseID) == ["toolu_1_1", "toolu_1_2", "toolu_1_3"])
            #expect(sent[1].isError && sent[1].text.contains("Check its effects"))
            #expect(brain.requests.first?.turn == 2)
        }
    }

    @Test("wake after the brain answered and before the session ended: no brain call, the end is recorded")
    func wakeAfterFinalAnswer() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            let session = try await Self.crafted(
                fixture,
                [
                    NewEvent(
                        type: HarnessEvent.brainResponse,
                        data: [
                            "turn": 1, "content": [["type": "text", "text": "done already"]], "stopReason": "end_turn",
                        ])
                ])
            let calls = Mutex(0)
            let brain = ClosureBrain { request in
                calls.withLock { $0 += 1 }
                return ClosureBrain.calls([], text: "again", turn: request.turn)
            }
            let outcome = try await fixture.harness().run(session, brain: brain)
            #expect(outcome.reason == "end_turn")
            #expect(outcome.text == "done already")
            #expect(calls.withLock { $0 } == 0)
            // Waking an ended session does nothing and writes nothing.
            let head = try await fixture.store.session(session).head
            let again = try await fixture.harness().run(session, brain: brain)
            #expect(again.resumed == false)
            let after = try await fixture.store.session(session).head
            #expect(after == head)
        }
    }

    @Test("unknown tools and inputs that cannot run are recorded as error results; nothing is provisioned")
    func badToolCalls() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            let brain = CheckedBrain(
                ClosureBrain { request in
                    guard request.turn == 1 else { return ClosureBrain.calls([], text: "ok", turn: request.turn) }
                    var response = ClosureBrain.calls(
                        [
                            ("no_such_tool", [:]),
                            ("bash", ["cmd": "ls"]),
                            ("bash", "ls"),
                            ("str_replace_based_edit_tool", ["command": "view"]),
                            ("sandbox_tool", ["sandbox": "Bad Name", "tool": "bash", "input": ["command": "ls"]]),
                            ("sandbox_tool", ["sandbox": "ok", "tool": "python", "input": [:]]),
                            ("session_events", ["limit": -1]),
                        ], turn: 1)
                    response.content.append(
                        .toolUse(
                            ToolUse(
                                id: "call_raw", name: "bash", input: "{not json",
                                inputProblem: "the arguments are not a JSON object")))
                    return response
                })
            let harness = fixture.harness()
            let session = try await harness.create(task: "misbehave", spec: Self.spec)
            _ = try await harness.run(session, brain: brain)
            #expect(brain.problems == [])
            let events = try await fixture.events(session)
            let results = events.ofType(HarnessEvent.toolResult)
            #expect(results.count == 8)
            #expect(results.allSatisfy { $0.data["status"] == "error" })
            let texts = results.compactMap { $0.data["text"]?.stringValue }
            #expect(texts[0].contains("unknown tool 'no_such_tool'"))
            #expect(texts[1].contains("'command' (a string) is required"))
            #expect(texts[2].contains("must be a JSON object"))
            #expect(texts[3].contains("'path' is required"))
            #expect(texts[4].contains("invalid sandbox name"))
            #expect(texts[5].contains("'tool' must be one of"))
            #expect(texts[6].contains("'limit' must be a positive integer"))
            #expect(texts[7].contains("not a JSON object"))
            #expect(events.ofType(HarnessEvent.sandboxProvisioned).isEmpty)
            checkIntentsAnswered(events)
        }
    }

    @Test("limits: turns and tokens stop the agent; a new message starts a new task")
    func limits() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            let busy = ClosureBrain { request in
                var response = ClosureBrain.calls([("sandboxes", [:])], turn: request.turn)
                response.usage = .init(inputTokens: 900, outputTokens: 100)
                return response
            }
            let harness = fixture.harness()
            var spec = Self.spec
            spec.limits = AgentSpec.Limits(maxTurns: 3)
            let session = try await harness.create(task: "loop forever", spec: spec)
            let first = try await harness.run(session, brain: busy)
            #expect(first.reason == "max_turns")
            #expect(first.turns == 3)
            let second = try await harness.run(session, brain: busy, message: "three more")
            #expect(second.reason == "max_turns")
            let events = try await fixture.events(session)
            #expect(events.ofType(HarnessEvent.brainResponse).count == 6)
            #expect(events.ofType(HarnessEvent.sessionEnded).count == 2)
            #expect(events.ofType(HarnessEvent.userMessage).map { $0.id.rawValue } == ["um.1", "um.2"])
            checkIntentsAnswered(events)

            spec.limits = AgentSpec.Limits(maxTurns: 50, maxTokens: 2500)
            let tokens = try await harness.create(task: "spend", spec: spec)
            let outcome = try await harness.run(tokens, brain: busy)
            #expect(outcome.reason == "max_tokens")
            #expect(outcome.turns == 3)
        }
    }

    @Test("a harness whose session was woken by another stops at its next append; the new one finishes")
    func fencing() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            let harness = fixture.harness()
            let session = try await harness.create(task: "t", spec: Self.spec)
            let store = fixture.store
            let usurper = ClosureBrain { request in
                // While the first harness waits for its brain, another takes the session.
                _ = try await store.wake(session)
                return ClosureBrain.calls([("sandboxes", [:])], turn: request.turn)
            }
            let error = await #expect(throws: CorralError.self) { try await harness.run(session, brain: usurper) }
            #expect(error?.code == .conflict)
            #expect(error?.message.contains("taken over by another harness") == true)
            let responses = try await fixture.events(session).ofType(HarnessEvent.brainResponse)
            #expect(responses.isEmpty)
            let outcome = try await harness.run(session, brain: Self.finish)
            #expect(outcome.reason == "end_turn")
        }
    }

    @Test("bad specs and tasks are refused before a session is made")
    func refusals() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            let harness = fixture.harness()
            await #expect(throws: CorralError.self) { try await harness.create(task: "  ", spec: Self.spec) }
            var tiny = Self.spec
            tiny.contextBudget = 100
            await #expect(throws: CorralError.self) { try await harness.create(task: "t", spec: tiny) }
            var templated = Self.spec
            templated.hands = HandSpec(template: "python")
            let error = await #expect(throws: CorralError.self) { try await harness.create(task: "t", spec: templated) }
            #expect(error?.code == .notFound, "a template the provisioner does not know")
            var cloning = Self.spec
            cloning.hands = HandSpec(repo: "https://example.com/a/b.git")
            let noGateway = await #expect(throws: CorralError.self) {
                try await harness.create(task: "t", spec: cloning)
            }
            #expect(noGateway?.code == .unavailable, "a repository needs the gateway")
            let sessions = try await fixture.store.list()
            #expect(sessions.isEmpty)
            await #expect(throws: CorralError.self) {
                try await harness.run(SessionID(unchecked: "se-none"), brain: Self.finish)
            }
        }
    }
}
