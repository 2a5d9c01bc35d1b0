import CorralCore
import CorralSandbox
import CorralSession
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import CorralHarness

/// Agent runs whose tools run in real sandboxes on the engine, driven by the brain server.
@Suite("Agent runs in real sandboxes", .engine, .timeLimit(.minutes(3)))
struct SandboxRunTests {
    static func brain(_ server: BrainServer) throws -> AnthropicBrain {
        var configuration = AnthropicBrain.Configuration()
        configuration.baseURL = server.baseURL
        return try AnthropicBrain(configuration: configuration, apiKey: server.apiKey)
    }

    @Test(
        "an agent edits files and runs a command in a sandbox made on its first tool call; a second named sandbox is separate"
    )
    func editAndRun() async throws {
        let server = try BrainServer(.anthropic) { request in
            switch request.assistantMessages {
            case 0: .turn(text: "No sandbox yet; listing.", calls: [("sandboxes", [:])])
            case 1:
                .turn(
                    text: "Writing a program.",
                    calls: [
                        (
                            "str_replace_based_edit_tool",
                            [
                                "command": "create", "path": "/workspace/sum.py",
                                "file_text": "print(sum(range(1, 11)))\n",
                            ]
                        ),
                        (
                            "str_replace_based_edit_tool",
                            ["command": "str_replace", "path": "/workspace/sum.py", "old_str": "11", "new_str": "101"]
                        ),
                    ])
            case 2:
                .turn(
                    text: nil,
                    calls: [
                        ("bash", ["command": "python3 sum.py && id -un"]),
                        ("str_replace_based_edit_tool", ["command": "view", "path": "/workspace/sum.py"]),
                    ])
            case 3:
                .turn(
                    text: "Checking a second sandbox.",
                    calls: [
                        (
                            "sandbox_tool",
                            ["sandbox": "scratch", "tool": "bash", "input": ["command": "ls /workspace | wc -l"]]
                        )
                    ])
            default: .turn(text: "The sum of 1 to 100 is 5050.", calls: [])
            }
        }
        defer { server.stop() }
        try await HarnessFixture.with { fixture in
            let harness = fixture.harness()
            let brain = try Self.brain(server)
            let session = try await harness.create(task: "Sum 1 to 100 with Python", spec: AgentSpec(brain: brain.spec))
            let outcome = try await harness.run(session, brain: brain)
            #expect(outcome.reason == "end_turn")
            #expect(server.problems == [])
            let events = try await fixture.events(session)
            // Lazy: the first tool call needed no sandbox; the first edit made "main".
            let provisioned = events.ofType(HarnessEvent.sandboxProvisioned)
            #expect(provisioned.map { $0.data["name"] } == ["main", "scratch"])
            let firstIntentForMain = try #require(
                events.first { $0.type == HarnessEvent.toolIntent && $0.data["sandbox"] == "main" })
            #expect(provisioned[0].seq == firstIntentForMain.seq + 1)
            #expect(provisioned[0].data["sandbox"] != provisioned[1].data["sandbox"])
            let results = events.ofType(HarnessEvent.toolResult).compactMap { $0.data["text"]?.stringValue }
            #expect(results[0].contains("No sandboxes yet"))
            #expect(results[1].contains("Created /workspace/sum.py"))
            #expect(results[3] == "5050\nagent\n")
            #expect(results[4].contains("print(sum(range(1, 101)))"))
            #expect(results[5] == "0\n")
            #expect(events.ofType(HarnessEvent.toolResult).allSatisfy { $0.data["status"] == "ok" })
            let sandboxIDs = events.ofType(HarnessEvent.toolResult).compactMap { $0.data["sandboxID"]?.stringValue }
            #expect(Set(sandboxIDs).count == 2)
            checkIntentsAnswered(events)
        }
    }

    @Test(
        "a sandbox killed mid-session is re-provisioned, an event says so, and the brain is told; a wake reattaches to the new one"
    )
    func lostSandbox() async throws {
        let told = Mutex(false)
        let overloaded = Mutex(false)
        let server = try BrainServer(.anthropic) { request in
            switch request.assistantMessages {
            case 0:
                return .turn(
                    text: nil, calls: [("bash", ["command": "echo one > /workspace/a.txt"]), ("sandboxes", [:])])
            case 1:
                // The sandbox dies between two turns: remove it the way an operator (or the OOM killer) would.
                if let listing = request.toolResults.last,
                    let id = listing.split(separator: " ").first(where: { $0.hasPrefix("sb-") })
                {
                    _ = try? runCorralBlocking(
                        ["sandbox", "rm", String(id)], environment: ["CORRAL_STATE_DIR": NSTemporaryDirectory()])
                }
                return .turn(text: nil, calls: [("bash", ["command": "cat /workspace/a.txt"])])
            case 2:
                told.withLock {
                    $0 =
                        request.toolResults.last?.contains("was lost") == true
                        && request.toolResults.last?.contains("replaces it") == true
                }
                return .turn(text: nil, calls: [("bash", ["command": "echo two > /workspace/b.txt; ls /workspace"])])
            case 3 where !overloaded.withLock({ $0 }):
                overloaded.withLock { $0 = true }
                return .status(
                    529, body: #"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                    headers: [:])
            case 3: return .turn(text: nil, calls: [("bash", ["command": "cat /workspace/b.txt"])])
            default: return .turn(text: "Recovered.", calls: [])
            }
        }
        defer { server.stop() }
        try await HarnessFixture.with { fixture in
            let brain = try Self.brain(server)
            let session = try await fixture.harness().create(task: "survive", spec: AgentSpec(brain: brain.spec))
            // The first harness gives up on the overloaded brain; a second one wakes the session.
            await #expect(throws: CorralError.self) {
                try await fixture.harness { $0.retry.maxAttempts = 1 }.run(session, brain: brain)
            }
            let outcome = try await fixture.harness().run(session, brain: brain)
            #expect(outcome.reason == "end_turn")
            #expect(server.problems == [])
            #expect(told.withLock { $0 })
            let events = try await fixture.events(session)
            let lost = try #require(events.ofType(HarnessEvent.sandboxLost).first)
            #expect(lost.data["name"] == "main")
            let provisioned = events.ofType(HarnessEvent.sandboxProvisioned)
            #expect(provisioned.count == 2)
            #expect(provisioned[1].data["replaces"] == lost.data["sandbox"])
            #expect(provisioned[1].data["generation"] == 2)
            let results = events.ofType(HarnessEvent.toolResult)
            #expect(results[2].data["status"] == "error")
            // In the new sandbox a.txt is gone: only what was written since is there.
            #expect(results[3].data["text"]?.stringValue == "b.txt\n")
            // After the wake the same (new) sandbox is used, not a third one.
            #expect(results[4].data["text"]?.stringValue == "two\n")
            #expect(results[4].data["sandboxID"] == provisioned[1].data["sandbox"])
            #expect(events.ofType(HarnessEvent.harnessWoke).count == 2)
            checkIntentsAnswered(events)
        }
    }
}
