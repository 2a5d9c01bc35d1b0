import CorralCore
import Foundation
import TestSupport
import Testing

@testable import CorralSession

/// Real writer processes (`corral session append`), killed with SIGKILL at random points:
/// before they open the session, while they read input, while they write, while they wait
/// for fdatasync, while they print. After each kill the log must hold every event the
/// writer acknowledged (printed), in order, exactly once, and nothing but a prefix of what
/// was sent. The next writer resends everything unacknowledged with the same ids and
/// `--expect-seq`, so events that landed without an acknowledgement are recognised, not
/// written twice. The time limit only stops a hang: 300 runs of a debug binary took 219 s on
/// a loaded CI host.
@Suite("Crashes of real writer processes", .timeLimit(.minutes(10)))
struct CrashTests {
    static let kills = 300

    static func plannedEvent(_ number: Int) -> String {
        let pad = String(repeating: "x", count: (number * 7919) % 700)
        return #"{"type":"crash.test","id":"c\#(number)","data":{"k":\#(number),"pad":"\#(pad)"}}"#
    }

    struct Round: Sendable {
        var printed: [(seq: UInt64, id: String)]
        var status: Int32
        var errors: String
    }

    @Test("kill -9 at random points, hundreds of times: every acknowledged event is there once, in order")
    func killWriters() async throws {
        let binary = try CorralBinary.path()
        try await withTemporaryDirectory { directory in
            let store = FileSessionStore(directory: directory.appendingPathComponent("sessions"))
            let id = try await store.create().id
            var acknowledged: UInt64 = 0
            var generator = SeededGenerator(seed: 0xC0FFEE)
            var landedUnacknowledged = 0
            for round in 0..<Self.kills {
                let start = acknowledged
                let plan = (
                    // One round in ten kills the writer while it starts up or recovers.
                    killAtStart: Int.random(in: 0..<10, using: &generator) == 0,
                    warmUp: Int.random(in: 1...2, using: &generator),
                    chunks: (0..<Int.random(in: 1...4, using: &generator)).map { _ in
                        Int.random(in: 1...8, using: &generator)
                    },
                    acksBeforeKill: Int.random(in: 0...10, using: &generator),
                    finalChunk: Int.random(in: 1...20, using: &generator),
                    killDelay: UInt32.random(in: 0...400, using: &generator)
                )
                let result = try await onOwnThread { () throws -> Round in
                    let child = try PipedChild(
                        binary, ["session", "append", id.rawValue, "--expect-seq", String(start + 1), "--json"],
                        environment: ["CORRAL_STATE_DIR": directory.path])
                    var printed: [(UInt64, String)] = []
                    func take(_ line: String) {
                        guard let value = try? JSONCodec.decode(line), let seq = value["seq"]?.intValue,
                            let id = value["id"]?.stringValue
                        else {
                            printed.append((0, "unparsable: \(line)"))
                            return
                        }
                        printed.append((UInt64(seq), id))
                    }
                    var next = Int(start) + 1
                    func send(_ count: Int) -> Bool {
                        defer { next += count }
                        return child.write((next..<next + count).map(Self.plannedEvent).joined(separator: "\n") + "\n")
                    }
                    if !plan.killAtStart, send(plan.warmUp) {
                        // The writer is up once it acknowledges the first events.
                        while printed.count < plan.warmUp, let line = child.readLine() { take(line) }
                        // Then input arrives in pieces, the writer appends it in batches of
                        // whatever has arrived, and the kill comes right after an
                        // acknowledgement: while the next batch is written, synced or printed.
                        var open = true
                        for size in plan.chunks where open { open = send(size) }
                        let target = min(plan.warmUp + plan.acksBeforeKill, next - Int(start) - 1)
                        while printed.count < target, let line = child.readLine() { take(line) }
                        // One more batch, and the kill a random moment later: the moment is
                        // the point here, not something to wait for. Most land between the
                        // write and the acknowledgement, where retries must not duplicate.
                        if open, send(plan.finalChunk) { usleep(plan.killDelay) }
                    }
                    child.killHard()
                    let status = child.wait()
                    // Lines printed before the kill are acknowledgements too.
                    child.remainingOutput().forEach(take)
                    return Round(printed: printed, status: status, errors: child.errorOutput())
                }
                // A writer may end on its own (for instance if all its input was handled);
                // it must never fail.
                #expect(result.status == 137 || result.status == 0, "round \(round): writer failed: \(result.errors)")
                let expectedAcks = result.printed.indices.map { (start + 1 + UInt64($0), "c\(Int(start) + 1 + $0)") }
                #expect(
                    result.printed.map(\.seq) == expectedAcks.map(\.0), "round \(round): acknowledgements out of order")
                #expect(
                    result.printed.map(\.id) == expectedAcks.map(\.1), "round \(round): acknowledged the wrong events")
                acknowledged = max(acknowledged, result.printed.last?.seq ?? 0)

                // What this round may have touched is checked every round, the whole log every
                // 25 rounds and at the end: reading it all each time would dominate the test.
                let fresh = FileSessionStore(directory: store.directory)
                let checkFrom = round % 25 == 24 || round == Self.kills - 1 ? 1 : max(1, Int(start) - 20)
                var events: [Event] = []
                for try await event in fresh.read(id, from: UInt64(checkFrom)) { events.append(event) }
                let total = checkFrom - 1 + events.count
                #expect(total >= Int(acknowledged), "round \(round): acknowledged \(acknowledged), log holds \(total)")
                for (offset, event) in events.enumerated() {
                    let number = checkFrom + offset
                    if event.seq != UInt64(number) || event.id.rawValue != "c\(number)"
                        || event.data["k"]?.intValue != Int64(number)
                    {
                        Issue.record("round \(round): seq \(event.seq) holds \(event.id), not c\(number)")
                        break
                    }
                }
                if total > Int(acknowledged) { landedUnacknowledged += 1 }
                if total < Int(acknowledged) { break }
            }
            #expect(acknowledged > UInt64(Self.kills), "the writers acknowledged too little for the test to mean much")
            // Kills between the write and the acknowledgement happened, and the retries
            // recognised those events instead of writing them twice.
            #expect(
                landedUnacknowledged > Self.kills / 20,
                "only \(landedUnacknowledged) kills landed between a write and its acknowledgement")
        }
    }
}
