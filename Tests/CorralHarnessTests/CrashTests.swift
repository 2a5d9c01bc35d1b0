import CorralCore
import CorralSandbox
import CorralSession
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import CorralHarness

/// Real `corral agent run` processes, with the Anthropic brain pointed at the brain server
/// and tools in real sandboxes, killed with SIGKILL at random points: while starting, while
/// waiting for the brain, while provisioning, between a tool's intent and its result. Each
/// killed session is then woken with `corral agent wake`. Every run must complete, every
/// request the brain saw must be a valid transcript, and the non-idempotent tool (a bash
/// append of one line to a file) must never have run twice: a line is there at most once,
/// and exactly once when its result says ok.
// Ten minutes: alone it takes about two, but beside the whole suite on two cores a run's cold
// sandbox has taken 40 s to make.
@Suite("Crashes of real harness processes", .engine, .timeLimit(.minutes(10)))
struct CrashTests {
    static let runs = 50
    static let workers = 3
    static let appends = 4

    /// The conversation, picked by how many turns the transcript holds (so it survives any
    /// number of harness deaths): four appends, a read and a log query among them, then done.
    static func reply(_ request: BrainServer.Request) -> BrainServer.Reply {
        // A brain thinks for a while. Without it a run's steps follow each other in a few
        // milliseconds, and on a loaded machine many kills would land after the run ended
        // (each connection has a thread of its own: this holds up that run only).
        usleep(200_000)
        func append(_ line: Int) -> (String, JSONValue) {
            ("bash", ["command": .string("echo line-\(line) >> /workspace/log.txt")])
        }
        switch request.assistantMessages {
        case 0: return .turn(text: "First line.", calls: [append(1)])
        case 1:
            return .turn(
                text: nil,
                calls: [("str_replace_based_edit_tool", ["command": "view", "path": "/workspace/log.txt"]), append(2)])
        case 2: return .turn(text: nil, calls: [("session_events", ["limit": 2]), append(3)])
        case 3: return .turn(text: nil, calls: [append(4)])
        default: return .turn(text: "Appended four lines.", calls: [])
        }
    }

    struct RunRecord: Sendable {
        var printedSession: String?
        var killed: Bool
    }

    @Test("kill -9 at random points, 50 times, then wake: every run completes and no append ran twice")
    func killAndWake() async throws {
        let server = try BrainServer(.anthropic, reply: Self.reply)
        defer { server.stop() }
        try await HarnessFixture.with { fixture in
            let environment = [
                "ANTHROPIC_BASE_URL": server.baseURL, "ANTHROPIC_API_KEY": server.apiKey,
                "CORRAL_STATE_DIR": fixture.directory.path, "CORRAL_LOG": "error",
            ]
            let arguments = [
                "agent", "run", "--brain", "anthropic", "--model", "claude-test", "--image", TestEnvironment.baseImage,
                "append four lines",
            ]

            // One run to the end gives the number of events a run writes.
            let calibration = try await onOwnThread { try HarnessProcess(arguments, environment: environment).finish() }
            #expect(calibration.status == 0, "\(calibration.stderr)")
            #expect(calibration.stdout.contains("[end] end_turn"))
            let calibrated = try #require(
                calibration.stdout.split(separator: "\n").first.flatMap { SessionID(String($0)) })
            let total = try await fixture.store.session(calibrated).head

            // Each run is killed just after its log reaches an event drawn at random, plus up
            // to 5 ms (commands over the control connection take a few): inside whatever follows that event (a brain call, a provisioning, a
            // command). One run in eight is killed while it starts, before it has a session.
            let store = fixture.store
            let records = try await withThrowingTaskGroup(of: [RunRecord].self) { group in
                for worker in 0..<Self.workers {
                    group.addTask {
                        var generator = SeededGenerator(seed: UInt64(0xC0_22A1 + worker))
                        var records: [RunRecord] = []
                        for _ in stride(from: worker, to: Self.runs, by: Self.workers) {
                            let early = Int.random(in: 0..<8, using: &generator) == 0
                            let target = UInt64.random(in: 3...(total - 1), using: &generator)
                            let delay = UInt32.random(in: 0...(early ? 150_000 : 5_000), using: &generator)
                            let process = try HarnessProcess(arguments, environment: environment)
                            if early {
                                try await onOwnThread { _ = usleep(delay) }
                            } else if let line = try await onOwnThread({ process.firstLine() }),
                                let id = SessionID(line)
                            {
                                let reached = try await withThrowingTaskGroup(of: Bool.self) { race in
                                    race.addTask {
                                        _ = try await store.waitForHead(id, beyond: target - 1); return true
                                    }
                                    race.addTask {
                                        try await Task.sleep(for: .seconds(180)); return false
                                    }
                                    defer { race.cancelAll() }
                                    return try await race.next() ?? false
                                }
                                #expect(reached, "run \(id) never reached event \(target)")
                                try await onOwnThread { _ = usleep(delay) }
                            }
                            process.kill()
                            let result = try await onOwnThread { process.finish() }
                            let first = result.stdout.split(separator: "\n").first.map(String.init)
                            records.append(
                                RunRecord(
                                    printedSession: first.flatMap { $0.hasPrefix("se-") ? $0 : nil },
                                    killed: process.wasKilled))
                        }
                        return records
                    }
                }
                var all: [RunRecord] = []
                for try await records in group { all += records }
                return all
            }
            #expect(records.count == Self.runs)
            // A kill aimed after the last brain answer may come when the run has just ended.
            // The head is seen through a directory watch, late on a loaded machine (19 of 50 were
            // killed in time in a CI run when the brain thought 50 ms; it thinks 200 ms now; 24,
            // 17 and 15 of 50 in whole-suite runs): a quarter is the floor, still a dozen kills at
            // points drawn across the whole run.
            #expect(records.filter(\.killed).count >= Self.runs / 4, "many runs are killed before they end")

            // Wake every session any run made, whether or not its id got printed.
            let sessions = try await fixture.store.list()
            let printed = Set(records.compactMap(\.printedSession))
            #expect(printed.isSubset(of: Set(sessions.map(\.id.rawValue))))
            var unknownWithLine = 0
            var unknownWithoutLine = 0
            var repaired = 0
            let provisioner = try HarnessFixture.provisioner()
            for info in sessions {
                guard info.head > 0 else {
                    // Killed between making the session and writing its task: never started.
                    #expect(!printed.contains(info.id.rawValue))
                    continue
                }
                let wake = try await onOwnThread {
                    try HarnessProcess(["agent", "wake", info.id.rawValue], environment: environment).finish()
                }
                #expect(wake.status == 0, "wake \(info.id): \(wake.stderr)")
                let events = try await fixture.events(info.id)
                #expect(events.last?.type == HarnessEvent.sessionEnded, "\(info.id) did not complete")
                #expect(events.last?.data["reason"] == "end_turn")
                #expect(Set(events.map(\.id)).count == events.count, "\(info.id) has an event id twice")
                #expect(
                    events.ofType(HarnessEvent.brainResponse).compactMap { $0.data["turn"]?.intValue } == [
                        1, 2, 3, 4, 5,
                    ])
                checkIntentsAnswered(events)
                let woke = events.ofType(HarnessEvent.harnessWoke)
                if woke.contains(where: { !($0.data["repairs"]?.arrayValue ?? []).isEmpty }) { repaired += 1 }

                // The appends: read the file back from the session's current sandbox.
                let sandbox = try #require(
                    events.ofType(HarnessEvent.sandboxProvisioned).last?.data["sandbox"]?.stringValue.flatMap(
                        SandboxID.init))
                let file = try await provisioner.handle(sandbox).execute(
                    tool: "bash", input: ["command": "cat /workspace/log.txt 2>/dev/null; true"])
                let lines = file.text.split(separator: "\n").map(String.init)
                for line in 1...Self.appends {
                    let count = lines.filter { $0 == "line-\(line)" }.count
                    let result = events.ofType(HarnessEvent.toolResult).first {
                        $0.data["name"] == "bash" && $0.data["turn"]?.intValue == Int64(line)
                    }
                    let status = result?.data["status"]?.stringValue
                    #expect(count <= 1, "\(info.id): line-\(line) was appended \(count) times")
                    switch status {
                    case "ok": #expect(count == 1, "\(info.id): line-\(line) is reported ok but is not in the file")
                    case "unknown": if count == 1 { unknownWithLine += 1 } else { unknownWithoutLine += 1 }
                    default: Issue.record("\(info.id): line-\(line) has result \(status ?? "none")")
                    }
                }
            }
            #expect(server.problems == [], "malformed transcripts: \(server.problems.prefix(5))")
            // The kills must have hit the window this test is about, or it proves nothing.
            #expect(unknownWithLine + unknownWithoutLine >= 1, "no kill landed between an intent and its result")
            // Some of the killed runs die with an intent unanswered (7 of 25, 4 of 19 and 2 of 17
            // in CI runs); the floor follows how many were killed, which the machine's load sets.
            let killed = records.filter(\.killed).count
            #expect(repaired >= max(1, killed / 8), "\(repaired) repaired of \(killed) killed")
            print(
                "crash test: \(records.filter(\.killed).count) of \(Self.runs) runs killed (runs write \(total) events); \(repaired) sessions needed repair on wake; unknown results: \(unknownWithLine) had run, \(unknownWithoutLine) had not"
            )
        }
    }
}
