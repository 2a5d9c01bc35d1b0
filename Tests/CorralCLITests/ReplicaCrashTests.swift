import CorralAPI
import CorralCore
import CorralSession
import CorralSessionPostgres
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

/// Two `corral serve` replicas over one PostgreSQL store, one of them killed with SIGKILL and
/// started again, over and over, while writers append through both.
@Suite("Replicas killed in the middle of appends", .engine, .serialized, .timeLimit(.minutes(10)))
struct ReplicaCrashTests {
    /// Kills in one run: CORRAL_REPLICA_KILLS, else 100.
    static let kills = ProcessInfo.processInfo.environment["CORRAL_REPLICA_KILLS"].flatMap(Int.init) ?? 100
    static let writers = 4

    /// What the writers were told: each event id and the seq its append was acknowledged at.
    final class Acknowledged: Sendable {
        let value = Mutex<[SessionID: [(id: String, seq: UInt64)]]>([:])
        let stop = Atomic<Bool>(false)
        /// Appends that failed and were sent again.
        let failures = Atomic<Int>(0)
        /// Agent sessions whose start was acknowledged (202).
        let agents = Mutex<[SessionID]>([])
    }

    /// An agent of many quick turns, each a `session_events` call (no sandbox): its runs take
    /// long enough for kills to land in them.
    static let script =
        String(repeating: #"{"tool_calls": [{"name": "session_events", "input": {"limit": 1}}]}"# + "\n", count: 15)
        + #"{"text": "Done."}"# + "\n"

    @Test(
        "kill -9 a replica again and again while appends and agent runs go through both: no acknowledged event is lost or duplicated, every run ends with no tool call done twice, and every session wakes",
        .enabled(if: TestEnvironment.shouldRunStoreTests, Comment(rawValue: TestEnvironment.storeSkipReason)))
    func killDuringAppends() async throws {
        try await ReplicaRunTests.withReplicas(["a", "b"], script: Self.script) {
            replicas, states, url, script, store in
            try await Self.exercise(replicas, states: states, url: url, store: store, script: script)
        }
    }

    static func exercise(
        _ started: [RunningCorral], states: [URL], url: String, store: PostgresSessionStore, script: URL
    ) async throws -> [RunningCorral] {
        var replicas = started
        let clients = try states.map {
            try CorralClient(endpoint: .unixSocket(path: $0.appendingPathComponent("corral.sock").path))
        }
        defer { for client in clients { client.shutdown() } }
        var made: [SessionID] = []
        for _ in 0..<writers { made.append(try await store.create(id: nil, tenant: .local, metadata: [:]).id) }
        let sessions = made
        let acknowledged = Acknowledged()

        // Each writer appends one event at a time to its own session, through either replica;
        // an append that fails (its replica was killed) is sent again, with the same id,
        // until one is acknowledged.
        let writing = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, session) in sessions.enumerated() {
                    group.addTask {
                        var sent = 0
                        while !acknowledged.stop.load(ordering: .relaxed) {
                            sent += 1
                            let id = "ev-w\(index)-\(sent)"
                            var attempt = index
                            while true {
                                attempt += 1
                                do {
                                    try await clients[attempt % clients.count].appendEvents(
                                        session, [NewEvent(id: EventID(unchecked: id), type: "test.step")],
                                        expectedSeq: nil, epoch: nil, durability: .fsync
                                    ) { result in
                                        guard let seq = result.events.first?.seq else { return }
                                        acknowledged.value.withLock { $0[session, default: []].append((id, seq)) }
                                    }
                                    break
                                } catch {
                                    acknowledged.failures.add(1, ordering: .relaxed)
                                    // Its replica is down: the other one is tried next.
                                }
                            }
                        }
                    }
                }
                // Agents, started through either replica, one after another.
                group.addTask {
                    var started = 0
                    while !acknowledged.stop.load(ordering: .relaxed) {
                        started += 1
                        do {
                            let status = try await clients[started % clients.count].startAgent(
                                StartAgentRequest(task: "look around", brain: "scripted:\(script.path)"))
                            let id = try SessionID(validating: status.session)
                            acknowledged.agents.withLock { $0.append(id) }
                        } catch {
                            // Its replica is down: the next start goes to the other one.
                        }
                        // A steady stream of starts, ten a second, over the whole run of kills:
                        // the rate is the subject here, not a condition to wait for.
                        try await Task.sleep(for: .milliseconds(100))
                    }
                }
                try await group.waitForAll()
            }
        }

        var generator = SystemRandomNumberGenerator()
        for _ in 0..<kills {
            try await Task.sleep(for: .milliseconds(Int.random(in: 20...250, using: &generator)))
            let victim = Int.random(in: 0..<replicas.count, using: &generator)
            replicas[victim].kill()
            replicas[victim] = try await ReplicaRunTests.startReplica(state: states[victim], url: url)
        }
        acknowledged.stop.store(true, ordering: .relaxed)
        try await writing.value

        // Every acknowledged event is in its session exactly once, at the seq it was
        // acknowledged at, and the log holds nothing else.
        let told = acknowledged.value.withLock { $0 }
        var total = 0
        for session in sessions {
            var stored: [Event] = []
            for try await event in store.read(session) { stored.append(event) }
            let acks = told[session] ?? []
            total += acks.count
            #expect(
                stored.count == acks.count, "session \(session): \(stored.count) stored, \(acks.count) acknowledged")
            #expect(Set(stored.map(\.id.rawValue)).count == stored.count, "a duplicated event in \(session)")
            for (id, seq) in acks {
                let at = stored.first { $0.seq == seq }
                #expect(
                    at?.id.rawValue == id,
                    "\(id) was acknowledged at \(seq); the log holds \(at?.id.rawValue ?? "nothing")")
            }
            // Every session wakes through either replica, and takes appends under the new lease.
            let lease = try await clients[Int(seq(session)) % clients.count].wakeSession(session)
            #expect(lease.epoch >= 2)
            let after = try await store.append(session, [NewEvent(type: "after.kills")], lease: lease)
            #expect(after.head == UInt64(acks.count) + 1)
        }
        print(
            "note: \(total) appends acknowledged across \(kills) kills; \(acknowledged.failures.load(ordering: .relaxed)) failed and were sent again"
        )
        // Every agent whose start was acknowledged ends (taken over when its replica died),
        // with one result for each tool call.
        let agents = acknowledged.agents.withLock { $0 }
        var takenOver = 0
        for agent in agents {
            let ended = try await ReplicaRunTests.waitForEvent(store, agent, timeout: .seconds(60)) {
                $0.type == "session.ended"
            }
            #expect(ended.data["reason"]?.stringValue == "end_turn", "\(agent): \(ended.data)")
            var results: [String: Int] = [:]
            var wakes = 0
            for try await event in store.read(agent) {
                if event.type == "tool.result", let call = event.data["toolUseID"]?.stringValue {
                    results[call, default: 0] += 1
                }
                if event.type == "harness.woke" { wakes += 1 }
            }
            #expect(results.count == 15 && results.values.allSatisfy { $0 == 1 }, "\(agent): \(results)")
            if wakes > 1 { takenOver += 1 }
        }
        print("note: \(agents.count) agent runs, \(takenOver) of them taken over by another replica")
        #expect(agents.count >= 10, "too few agent runs: \(agents.count)")
        #expect(takenOver > 0, "no agent run was ever killed mid-run")
        #expect(total >= kills, "too few appends were made to mean anything: \(total)")
        #expect(acknowledged.failures.load(ordering: .relaxed) > 0, "no append ever met a killed replica")
        return replicas
    }

    static func seq(_ session: SessionID) -> UInt64 { UInt64(session.rawValue.utf8.reduce(0) { $0 &+ Int($1) }) }
}
