import CorralAPI
import CorralCore
import CorralSandbox
import CorralSession
import CorralSessionPostgres
import DockerEngine
import Foundation
import Logging
import TestSupport
import Testing

/// Two `corral serve` processes, replicas over one PostgreSQL store, each on a state
/// directory of its own (as two hosts would be), running a scripted agent whose first tool
/// call sleeps for a minute.
@Suite("Harness runs across service replicas", .engine, .serialized, .timeLimit(.minutes(5)))
struct ReplicaRunTests {
    static let script = """
        {"text": "Sleeping.", "tool_calls": [{"name": "bash", "input": {"command": "sleep 60"}}]}
        {"text": "Done."}
        {"text": "Sleeping again.", "tool_calls": [{"name": "bash", "input": {"command": "sleep 60"}}]}

        """

    @Test(
        "one replica runs a session and another is refused; kill -9 of the runner mid tool call: another takes the run over, records the call unknown and finishes it; two start it at once: one wins; a stop through the other replica stops it",
        .enabled(if: TestEnvironment.shouldRunStoreTests, Comment(rawValue: TestEnvironment.storeSkipReason)))
    func takeOverAfterKill() async throws {
        try await Self.withReplicas(["a", "b", "c"], script: Self.script) { replicas, states, _, script, store in
            try await Self.exercise(replicas, states: states, script: script, store: store)
            return replicas
        }
    }

    /// Replicas on state directories of their own (named `names`), over a PostgreSQL schema of
    /// the test's own, with a 2 s run lease and `script` as the agent's; `body` gets them, their
    /// state directories, the store URL, the script's file and the store, and returns the
    /// replicas running at its end (it may replace killed ones). Everything is stopped and
    /// removed afterwards, the schema too.
    static func withReplicas(
        _ names: [String], script: String,
        _ body: ([RunningCorral], [URL], String, URL, PostgresSessionStore) async throws -> [RunningCorral]
    ) async throws {
        guard let url = TestEnvironment.freshStoreURL() else { return }
        let store = try await PostgresSessionStore.connect(url: url, logger: Logger(label: "corral.test"))
        try await withTemporaryDirectory { root in
            let states = names.map { root.appendingPathComponent($0) }
            let scriptFile = root.appendingPathComponent("agent.jsonl")
            try Data(script.utf8).write(to: scriptFile)
            var replicas: [RunningCorral] = []
            do {
                for state in states {
                    try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
                    try Data("[store]\nrun_lease = \"2s\"\n".utf8).write(
                        to: state.appendingPathComponent("corral.toml"))
                    replicas.append(try await Self.startReplica(state: state, url: url))
                }
                replicas = try await body(replicas, states, url, scriptFile, store)
            } catch {
                await Self.cleanUp(replicas, states: states)
                throw error
            }
            await Self.cleanUp(replicas, states: states)
        }
        try? await store.dropSchema()
        await store.shutdown()
    }

    static func exercise(_ replicas: [RunningCorral], states: [URL], script: URL, store: PostgresSessionStore)
        async throws
    {
        let first = try CorralClient(endpoint: .unixSocket(path: states[0].appendingPathComponent("corral.sock").path))
        let second = try CorralClient(endpoint: .unixSocket(path: states[1].appendingPathComponent("corral.sock").path))
        let third = try CorralClient(endpoint: .unixSocket(path: states[2].appendingPathComponent("corral.sock").path))
        defer {
            for client in [first, second, third] { client.shutdown() }
        }
        let started = try await first.startAgent(
            StartAgentRequest(task: "sleep a minute", brain: "scripted:\(script.path)"))
        let id = try SessionID(validating: started.session)
        #expect(started.state == "running" && started.replica != nil, "\(started)")

        // The second replica is refused the same session while the first holds it, and says where it runs.
        let refused = await #expect(throws: CorralError.self) { _ = try await second.runHarness(id, message: nil) }
        #expect(refused?.code == .conflict, "\(String(describing: refused))")
        #expect(
            refused?.message.contains("replica \(started.replica ?? "?")") == true, "\(String(describing: refused))")
        let seen = try await second.harnessStatus(id)
        #expect(seen.state == "running" && seen.replica == started.replica, "\(seen)")

        // Killed in the middle of the tool call.
        let intent = try await waitForEvent(store, id) { $0.type == "tool.intent" }
        let callID = intent.data["toolUseID"]?.stringValue ?? "?"
        replicas[0].kill()

        // The second replica takes the run over once the lease expires, and finishes it.
        let ended = try await waitForEvent(store, id, timeout: .seconds(120)) { $0.type == "session.ended" }
        #expect(ended.data["reason"]?.stringValue == "end_turn", "\(ended.data)")
        var events: [Event] = []
        for try await event in store.read(id) { events.append(event) }
        let woke = events.filter { $0.type == "harness.woke" }
        #expect(woke.count == 2, "one wake per run: \(woke.map(\.data))")
        let repairs = woke.last?.data["repairs"]?.arrayValue ?? []
        #expect(
            repairs.contains { $0["toolUseID"]?.stringValue == callID && $0["action"]?.stringValue == "unknown" },
            "the call in flight is recorded unknown: \(repairs)")
        let results = events.filter { $0.type == "tool.result" && $0.data["toolUseID"]?.stringValue == callID }
        #expect(results.count == 1, "one result for the call in flight, never two: \(results.map(\.data))")

        // Whichever live replica took it over ran it to the end.
        let statuses = [try await second.harnessStatus(id), try await third.harnessStatus(id)]
        #expect(statuses.allSatisfy { $0.state == "idle" }, "\(statuses)")
        #expect(statuses.filter { $0.lastOutcome == "end_turn" }.count == 1, "\(statuses)")

        // Both live replicas asked at once to run the idle session: exactly one does (its run
        // sleeps a minute, so the other cannot come after it).
        let clients = [second, third]
        let outcomes = await withTaskGroup(of: (Int, Result<HarnessStatus, any Error>).self) { group in
            for (index, client) in clients.enumerated() {
                group.addTask {
                    do { return (index, .success(try await client.runHarness(id, message: "once more"))) } catch {
                        return (index, .failure(error))
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        let won = outcomes.compactMap { outcome in (try? outcome.1.get()).map { (outcome.0, $0) } }
        let lost = outcomes.compactMap { outcome -> CorralError? in
            if case .failure(let error) = outcome.1 { return error as? CorralError }
            return nil
        }
        #expect(won.count == 1 && lost.count == 1, "\(outcomes)")
        #expect(lost.first?.code == .conflict, "\(lost)")

        // A stop asked through the replica that does not run it: the runner stops at its next
        // renewal, and the session is left resumable.
        let (winner, running) = try #require(won.first)
        let (runner, other) = (clients[winner], clients[1 - winner])
        let asked = try await other.stopHarness(id)
        #expect(asked.state == "stopping" && asked.replica == running.replica, "\(asked)")
        let deadline = ContinuousClock.now + .seconds(30)
        var after = try await other.harnessStatus(id)
        while after.state != "idle", ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            after = try await other.harnessStatus(id)
        }
        #expect(after.state == "idle", "the run did not stop: \(after)")
        // The runner gives its lease up just before it records the outcome: the other replica
        // may see the session idle a moment before the runner does.
        var ran = try await runner.harnessStatus(id)
        while ran.state != "idle", ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            ran = try await runner.harnessStatus(id)
        }
        #expect(ran.lastOutcome == "stopped", "\(ran)")
    }

    static func waitForEvent(
        _ store: PostgresSessionStore, _ id: SessionID, timeout: Duration = .seconds(60),
        _ match: @escaping (Event) -> Bool
    ) async throws -> Event {
        let deadline = ContinuousClock.now + timeout
        var next: UInt64 = 1
        while ContinuousClock.now < deadline {
            let page = try await store.readPage(id, from: next, limit: nil)
            if let found = page.events.first(where: match) { return found }
            next = (page.events.last?.seq ?? next - 1) + 1
            // Woken by the next append; the deadline bounds the wait.
            let beyond = next - 1
            _ = try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { _ = try await store.waitForHead(id, beyond: beyond) }
                group.addTask { try await Task.sleep(for: deadline - ContinuousClock.now) }
                defer { group.cancelAll() }
                try await group.next()
            }
        }
        throw WaitFailure(description: "session \(id) never wrote the event waited for")
    }

    static func startReplica(state: URL, url: String) async throws -> RunningCorral {
        let replica = try RunningCorral(
            ["serve", "--listen", "", "--state-dir", state.path],
            environment: [
                "CORRAL_STATE_DIR": state.path, "CORRAL_ENGINE": TestEnvironment.engineEndpoint,
                "CORRAL_CONFIG": state.appendingPathComponent("corral.toml").path, "CORRAL_LOG": "error",
                "CORRAL_STORE_URL": url, "CORRAL_SERVER": "", "CORRAL_TOKEN": "", "ANTHROPIC_API_KEY": "",
                "OPENAI_API_KEY": "",
            ])
        try await onOwnThread {
            try replica.waitForLine("saying it listens on the socket", timeout: 120) {
                $0.hasPrefix("corral serve: listening on unix://")
            }
        }
        return replica
    }

    /// Stops the replicas and removes every sandbox either made (the killed one's too).
    static func cleanUp(_ replicas: [RunningCorral], states: [URL]) async {
        for replica in replicas { replica.kill() }
        guard let engine = try? DockerEngineClient(parsing: TestEnvironment.engineEndpoint) else { return }
        defer { engine.shutdown() }
        for state in states {
            _ = try? await Provisioner.removeEverything(
                engine: engine, sandboxesDirectory: state.appendingPathComponent("sandboxes"))
        }
    }
}
