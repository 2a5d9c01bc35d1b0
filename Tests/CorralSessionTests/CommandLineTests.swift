import CorralCore
import Foundation
import TestSupport
import Testing

@testable import CorralSession

/// `corral session …` as a user runs it: the built executable, a state directory, stdin.
// Five minutes: alone each case takes a second or two, but beside the whole suite on two cores
// one once waited past two.
@Suite("corral session commands", .timeLimit(.minutes(5)))
struct CommandLineTests {
    struct Run: Sendable {
        var status: Int32
        var output: [String]
        var errors: String
    }

    func corral(_ arguments: [String], stdin: String = "", state: URL) async throws -> Run {
        let binary = try CorralBinary.path()
        return try await onOwnThread {
            let child = try PipedChild(binary, arguments, environment: ["CORRAL_STATE_DIR": state.path])
            child.write(stdin)
            child.closeInput()
            let output = child.remainingOutput()
            let errors = child.errorOutput()
            return Run(status: child.wait(), output: output, errors: errors)
        }
    }

    @Test("create, append, show, ls, wake and fork work together from the command line")
    func workflow() async throws {
        try await withTemporaryDirectory { state in
            let created = try await corral(["session", "create", "--meta", "owner=ci"], state: state)
            #expect(created.status == 0, "\(created.errors)")
            let id = try #require(created.output.first)
            let lines = """
                {"type":"user.message","data":{"text":"hi"}}
                {"type":"tool.intent","id":"toolu_1","data":{"cmd":"ls -la"}}

                {"type":"tool.result","id":"toolu_1-result","data":{"ok":true}}
                """
            let appended = try await corral(["session", "append", id], stdin: lines, state: state)
            #expect(appended.status == 0, "\(appended.errors)")
            #expect(appended.output == ["1", "2", "3"])

            let shown = try await corral(["session", "show", id, "--json", "--from", "2"], state: state)
            let events = try shown.output.map { try JSONCodec.decode($0) }
            #expect(events.map { $0["seq"] } == [2, 3])
            #expect(events.map { $0["id"] } == ["toolu_1", "toolu_1-result"])
            #expect(
                events[0]["data"] == ["cmd": "ls -la"] && events[0]["epoch"] == 1
                    && events[0]["time"]?.stringValue?.hasSuffix("Z") == true)
            let human = try await corral(["session", "show", id, "--limit", "1"], state: state)
            #expect(
                human.output.count == 1 && human.output[0].contains("user.message")
                    && human.output[0].contains(#"{"text":"hi"}"#))

            #expect(try await corral(["session", "wake", id], state: state).output == ["2"])
            let forked = try await corral(["session", "fork", id, "--at", "2", "--id", "copy"], state: state)
            #expect(forked.output == ["copy"])
            let listing = try await corral(["session", "ls", "--json"], state: state)
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            let sessions = try decoder.decode(
                [SessionInfo].self, from: Data(listing.output.joined(separator: "\n").utf8))
            #expect(sessions.map(\.id.rawValue).sorted() == ["copy", id].sorted())
            let original = try #require(sessions.first { $0.id.rawValue == id })
            #expect(original.head == 3 && original.epoch == 2 && original.metadata == ["owner": "ci"])
            let copy = try #require(sessions.first { $0.id.rawValue == "copy" })
            #expect(copy.head == 2 && copy.forkedFrom?.seq == 2)
            let table = try await corral(["session", "ls"], state: state)
            #expect(table.output.first?.hasPrefix("ID") == true && table.output.contains { $0.hasPrefix("copy ") })
        }
    }

    @Test("--expect-seq is the seq the first event gets: a match appends, a mismatch is refused")
    func expectSeq() async throws {
        try await withTemporaryDirectory { state in
            let id = try #require(try await corral(["session", "create"], state: state).output.first)
            #expect(
                try await corral(
                    ["session", "append", id, "--expect-seq", "1"], stdin: #"{"type":"a"}"# + "\n", state: state
                ).output == ["1"])
            let stale = try await corral(
                ["session", "append", id, "--expect-seq", "1"], stdin: #"{"type":"b"}"# + "\n", state: state)
            #expect(stale.status == 1)
            #expect(
                stale.errors.hasPrefix(
                    "corral: session \(id): expected the first new event to get seq 1, but the head is 1"))
            #expect(stale.errors.contains("\nhint: "))
            #expect(
                try await corral(
                    ["session", "append", id, "--expect-seq", "2"], stdin: #"{"type":"b"}"# + "\n", state: state
                ).output == ["2"])
        }
    }

    @Test("bad input gets one clear line on stderr, a non-zero status, and nothing written")
    func badInput() async throws {
        try await withTemporaryDirectory { state in
            let id = try #require(try await corral(["session", "create"], state: state).output.first)
            let store = FileSessionStore(directory: state.appendingPathComponent("sessions"))

            let malformed = try await corral(
                ["session", "append", id],
                stdin: #"{"type":"ok"}"# + "\n" + #"{"type": "x",}"# + "\n" + #"{"type":"never"}"# + "\n", state: state)
            #expect(malformed.status == 2)
            #expect(malformed.output == ["1"])
            #expect(malformed.errors.hasPrefix("corral: line 2: malformed JSON at byte 14"))
            #expect(try await store.all(SessionID(unchecked: id)).map(\.type) == ["ok"])

            let huge = #"{"type":"big","data":""# + String(repeating: "a", count: 5 << 20) + "\"}\n"
            let tooBig = try await corral(["session", "append", id], stdin: huge, state: state)
            #expect(tooBig.status == 1 && tooBig.errors.contains("over the event limit of 4m") && tooBig.output.isEmpty)
            #expect(try await FileSessionStore(directory: store.directory).session(SessionID(unchecked: id)).head == 1)

            let unknown = try await corral(["session", "show", "se-nothere"], state: state)
            #expect(
                unknown.status == 1 && unknown.errors.hasPrefix("corral: no session se-nothere in ")
                    && unknown.output.isEmpty)
            let unknownAppend = try await corral(
                ["session", "append", "se-nothere"], stdin: #"{"type":"a"}"# + "\n", state: state)
            #expect(unknownAppend.status == 1 && unknownAppend.errors.hasPrefix("corral: no session se-nothere"))

            for bad in ["../escape", "a/b", ".hidden", "UPPER"] {
                let refused = try await corral(["session", "create", "--id", bad], state: state)
                #expect(refused.status == 2 && refused.errors.hasPrefix("corral: invalid session id"), "\(bad)")
                let shown = try await corral(["session", "show", bad], state: state)
                #expect(shown.status == 2 && shown.errors.hasPrefix("corral: invalid session id"), "\(bad)")
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: state.path) == ["sessions"])
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: store.directory.path).sorted() == [".staging", id])
        }
    }

    @Test("tail prints events appended after it started, as they arrive")
    func tail() async throws {
        try await withTemporaryDirectory { state in
            let store = FileSessionStore(directory: state.appendingPathComponent("sessions"))
            let id = try await store.create().id
            let lease = try await store.currentLease(id)
            _ = try await store.append(id, [event(id: "before")], lease: lease)
            let binary = try CorralBinary.path()
            let child = try PipedChild(
                binary, ["session", "tail", id.rawValue, "--json"], environment: ["CORRAL_STATE_DIR": state.path])
            defer { child.killHard() }
            let seen = Task {
                try await onOwnThread { () -> [String] in (0..<3).compactMap { _ in child.readLine() } }
            }
            // The tail starts after the current head. Append once it waits for more: when it
            // has an inotify watch, which /proc shows. Alone this takes a tenth of a second;
            // in the whole suite on two cores, this test's own tasks wait for the pool, and
            // full CI runs have taken 47 to 63 s here and once over 90. A tail that never
            // watches still fails, within the suite's five minutes.
            let started = ContinuousClock.now
            while !Self.isWatching(pid: child.pid) {
                // A child that exited is a zombie until waited for: kill(pid, 0) still succeeds.
                if !Self.isRunning(pid: child.pid) {
                    let errors = child.errorOutput()
                    Issue.record("corral session tail exited before it watched the session: \(errors)")
                    return
                }
                try #require(ContinuousClock.now - started < .seconds(180), "corral session tail never watched")
                try await Task.sleep(for: .milliseconds(5))
            }
            for name in ["t1", "t2", "t3"] {
                _ = try await store.append(id, [event(id: name)], lease: lease)
            }
            // A tail that missed an event would wait forever: ended after 90 s, it shows what it saw.
            let watchdog = Task {
                try await Task.sleep(for: .seconds(90))
                child.killHard()
            }
            let lines = try await seen.value
            watchdog.cancel()
            #expect(try lines.map { try JSONCodec.decode($0)["id"] } == ["t1", "t2", "t3"])
        }
    }

    /// Whether `pid` runs: not gone, and not a zombie (state Z in /proc/PID/stat).
    static func isRunning(pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let end = stat.lastIndex(of: ")")
        else { return false }
        return stat[stat.index(after: end)...].trimmingCharacters(in: .whitespaces).first != "Z"
    }

    static func isWatching(pid: pid_t) -> Bool {
        let directory = "/proc/\(pid)/fdinfo"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            if let info = try? String(contentsOfFile: directory + "/" + name, encoding: .utf8),
                info.contains("inotify wd:")
            {
                return true
            }
        }
        return false
    }
}
