import CorralAPI
import CorralCore
import CorralSession
import CurlHTTP
import Foundation
import TestSupport
import Testing

/// The session and agent commands through a running `corral serve`: by `--server URL` with a
/// tenant's token over TCP, and found by `$STATE/corral.sock`.
@Suite("corral session and agent through a corral service", .engine, .serialized, .timeLimit(.minutes(10)))
struct RemoteCLITests {
    static let demoScript = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("examples/demo-agent.jsonl").path

    /// Times and store-made event ids differ from run to run; everything else must not.
    static func normalized(_ text: String) -> String {
        var text = text
        for (pattern, replacement) in [
            (#"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"#, "TIME"), (#"ev-[0-9a-z]{16}"#, "EVENT-ID"),
        ] {
            text = text.replacingOccurrences(of: pattern, with: replacement, options: .regularExpression)
        }
        return text
    }

    // Through the state directory's socket, as the local tenant: a network tenant may not
    // choose session ids (security review finding 11), and `--id` is what makes the two runs
    // comparable. The TCP listener serves the same router.
    @Test("create, append, show, ls, wake and fork print the same through the service as embedded")
    func sessionParity() async throws {
        try await ServiceFixture.with { service in
            try await service.start()
            let lines = """
                {"type":"user.message","id":"m-1","data":{"text":"héllo \\"there\\" / \\\\ ✓"}}
                {"type":"tool.intent","id":"toolu_1","data":{"cmd":"ls -la","n":[1,-2,3.5,0.25,9007199254740993],"ok":true,"none":null}}

                {"type":"tool.result","data":{"ok":true}}
                """
            let steps: [(String, [String], String?)] = [
                ("create", ["session", "create", "--id", "parity", "--meta", "owner=ci", "--json"], nil),
                ("create again", ["session", "create", "--id", "parity"], nil),
                ("append", ["session", "append", "parity"], lines),
                (
                    "append expecting 4", ["session", "append", "parity", "--expect-seq", "4", "--json"],
                    #"{"type":"x","id":"x-4"}"#
                ),
                (
                    "append expecting a taken seq", ["session", "append", "parity", "--expect-seq", "2"],
                    #"{"type":"y"}"#
                ),
                (
                    "retry of a landed append", ["session", "append", "parity", "--expect-seq", "4", "--json"],
                    #"{"type":"x","id":"x-4"}"#
                ),
                (
                    "append a bad line", ["session", "append", "parity"],
                    "{\"type\":\"z\",\"id\":\"z-5\"}\n{\"type\":\n"
                ),
                ("show", ["session", "show", "parity"], nil),
                ("show json", ["session", "show", "parity", "--json"], nil),
                ("show a slice", ["session", "show", "parity", "--from", "2", "--limit", "2", "--json"], nil),
                ("show none", ["session", "show", "parity", "--limit", "0"], nil),
                ("wake", ["session", "wake", "parity"], nil),
                ("wake json", ["session", "wake", "parity", "--json"], nil),
                ("append under the new epoch", ["session", "append", "parity"], #"{"type":"after.wake","id":"w-1"}"#),
                ("fork", ["session", "fork", "parity", "--at", "2", "--id", "parity-fork"], nil),
                ("fork json", ["session", "fork", "parity", "--at", "0", "--id", "parity-empty", "--json"], nil),
                ("fork past the head", ["session", "fork", "parity", "--at", "99"], nil),
                ("show the fork", ["session", "show", "parity-fork", "--json"], nil),
                ("ls", ["session", "ls"], nil),
                ("ls json", ["session", "ls", "--json"], nil),
            ]
            for (name, arguments, stdin) in steps {
                let embedded = try await service.embedded(arguments, stdin: stdin)
                let remote = try await service.local(arguments, stdin: stdin)
                #expect(remote.status == embedded.status, "\(name): \(remote.stderr) / \(embedded.stderr)")
                #expect(Self.normalized(remote.stdout) == Self.normalized(embedded.stdout), "\(name)")
                // An error may name the directory of the sessions: this one embedded; through the
                // service, never the service's own (it says $STATE).
                #expect(!remote.stderr.contains(service.state.path), "\(name): the service's path leaked")
                #expect(
                    remote.stderr.replacingOccurrences(of: "$STATE", with: "STATE")
                        == embedded.stderr.replacingOccurrences(of: service.embeddedState.path, with: "STATE"),
                    "\(name)")
            }
            // The comparison holds things worth holding: the steps did what they say.
            let shown = try await service.local(["session", "show", "parity", "--json"])
            let events = shown.stdout.split(separator: "\n").map {
                try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8))
            }
            #expect(
                events.map { $0?["id"]?.stringValue } == [
                    "m-1", "toolu_1", events[2]?["id"]?.stringValue, "x-4", "z-5", "w-1",
                ])
            #expect(events[0]?["data"]?["text"]?.stringValue == #"héllo "there" / \ ✓"#)
            #expect(events.last??["epoch"]?.intValue == 3)
            let taken = try await service.local(
                ["session", "append", "parity", "--expect-seq", "2"], stdin: #"{"type":"y"}"#)
            #expect(taken.status != 0 && taken.stderr.hasPrefix("corral: ") && taken.stderr.contains("2"))
            // Over TCP a tenant's `--id` is refused in one line with a hint, taken or not.
            let alice = try await service.token(for: "alice")
            for id in ["parity", "unused-id"] {
                let chosen = try await service.remote(["session", "create", "--id", id], token: alice)
                #expect(chosen.status == 2, "\(chosen.stderr)")
                #expect(
                    chosen.stderr.hasPrefix("corral: a session id cannot be chosen by a network tenant\nhint: "),
                    "\(chosen.stderr)")
            }
        }
    }

    @Test("through the service, an event reads back exactly as embedded: 1.0 stays 1.0, times keep microseconds")
    func wireFidelity() async throws {
        try await ServiceFixture.with { service in
            try await service.start()
            let arguments = [
                ["session", "create", "--id", "exact"], ["session", "append", "exact"],
                ["session", "show", "exact", "--json"],
            ]
            let stdin = [nil, #"{"type":"n","data":{"x":1.0}}"#, nil]
            var shown: [String] = []
            for remote in [false, true] {
                var last = ""
                for (arguments, stdin) in zip(arguments, stdin) {
                    let result =
                        remote
                        ? try await service.local(arguments, stdin: stdin)
                        : try await service.embedded(arguments, stdin: stdin)
                    #expect(result.status == 0, "\(result.stderr)")
                    last = result.stdout
                }
                shown.append(last)
            }
            let embedded = try JSONDecoder().decode(JSONValue.self, from: Data(shown[0].utf8))
            #expect(shown[0].contains(#""data":{"x":1.0}"#))
            #expect(embedded["time"]?.stringValue?.hasSuffix(".000000Z") == false)
            // Through the service an event reads back exactly as from disk: 1.0 stays 1.0, and
            // its time keeps its microseconds.
            let remote = try JSONDecoder().decode(JSONValue.self, from: Data(shown[1].utf8))
            #expect(shown[1].contains(#""data":{"x":1.0}"#))
            let time = remote["time"]?.stringValue ?? ""
            #expect(
                time.range(of: #"\.\d{6}Z$"#, options: .regularExpression) != nil && !time.hasSuffix(".000000Z"),
                "\(time)")
        }
    }

    @Test("events that do not fit one request go in several, in order; one that fits none is refused by name")
    func largeAppends() async throws {
        try await ServiceFixture.with { service in
            let token = try await service.token(for: "alice")
            try await service.start()
            let client = try CorralClient(endpoint: try HTTPEndpoint(parsing: service.url), token: token)
            defer { client.shutdown() }
            let session = try await client.createSession().id
            let big = JSONValue.string(String(repeating: "x", count: 700 << 10))
            let events = [
                NewEvent(type: "big", data: ["text": big]), NewEvent(type: "big", data: ["text": big]),
                NewEvent(type: "small"),
            ]
            let lease = try await client.session(session)
            var parts: [[UInt64]] = []
            try await client.appendEvents(session, events, expectedSeq: 1, epoch: lease.epoch, durability: .fsync) {
                parts.append($0.events.map(\.seq))
            }
            #expect(parts == [[1], [2, 3]])
            let page = try await client.events(session, from: 1, limit: nil)
            #expect(page.events.map(\.type) == ["big", "big", "small"] && page.events[1].data["text"] == big)

            // Through the command line: the line before the oversized one is kept and printed.
            let huge = #"{"type":"huge","data":""# + String(repeating: "y", count: 2 << 20) + "\"}"
            let refused = try await service.remote(
                ["session", "append", session.rawValue], token: token, stdin: #"{"type":"ok"}"# + "\n" + huge)
            #expect(refused.status == 1)
            #expect(refused.stdout == "4\n")
            #expect(
                refused.stderr.hasPrefix(
                    "corral: a 'huge' event is 2.0 MiB as JSON; the service takes at most 1.0 MiB in one request\nhint: "
                ), "\(refused.stderr)")
            #expect(refused.stderr.contains("\nhint: "))
        }
    }

    @Test("tail follows appends made while it runs, over server-sent events")
    func tailLive() async throws {
        try await ServiceFixture.with { service in
            let token = try await service.token(for: "alice")
            try await service.start()
            let id = try await service.remote(["session", "create"], token: token).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(
                try await service.remote(["session", "append", id], token: token, stdin: #"{"type":"one"}"#).stdout
                    == "1\n")
            let tail = try service.background(["session", "tail", id, "--from", "2"], token: token)
            defer { tail.kill() }
            #expect(
                try await service.remote(["session", "append", id], token: token, stdin: #"{"type":"two"}"#).stdout
                    == "2\n")
            try await onOwnThread { try tail.waitForLine("for seq 2") { $0.contains("  two  ") } }
            // The tail has printed seq 2, so it is live: this append comes after it started.
            #expect(
                try await service.remote(
                    ["session", "append", id], token: token, stdin: #"{"type":"three","data":{"n":3}}"#
                ).stdout
                    == "3\n")
            try await onOwnThread { try tail.waitForLine("for seq 3") { $0.contains("  three  ") } }
            let printed = tail.lines
            #expect(printed.count == 2, "\(printed)")
            #expect(printed.first?.hasPrefix("     2  ") == true)
            #expect(printed.last?.hasPrefix("     3  ") == true && printed.last?.hasSuffix(#"  {"n":3}"#) == true)
            let shown = try await service.remote(["session", "show", id, "--from", "2"], token: token)
            #expect(shown.stdout.split(separator: "\n").map(String.init) == printed)
        }
    }

    @Test("a tail through the state directory's socket rides out a service restart: nothing lost, nothing twice")
    func tailReconnects() async throws {
        try await ServiceFixture.with { service in
            try await service.start()
            let id = try await service.local(["session", "create"]).stdout.trimmingCharacters(
                in: .whitespacesAndNewlines)
            #expect(try await service.local(["session", "append", id], stdin: #"{"type":"before"}"#).stdout == "1\n")
            let tail = try service.localBackground(["session", "tail", id, "--from", "1", "--json"])
            defer { tail.kill() }
            try await onOwnThread { try tail.waitForLine("for seq 1") { $0.contains(#""type":"before""#) } }
            service.kill()
            // No service answers on the socket now: the command line writes the files itself.
            #expect(
                try await service.local(["session", "append", id], stdin: #"{"type":"while.down"}"#).stdout == "2\n")
            try await service.start()
            #expect(try await service.local(["session", "append", id], stdin: #"{"type":"after"}"#).stdout == "3\n")
            try await onOwnThread { try tail.waitForLine("for seq 3") { $0.contains(#""type":"after""#) } }
            let seqs = tail.lines.compactMap {
                try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8))["seq"]?.intValue
            }
            #expect(seqs == [1, 2, 3])
        }
    }

    @Test("agent run with the scripted brain runs in the service and prints its steps; wake follows the same way")
    func agentRun() async throws {
        try await ServiceFixture.with { service in
            // A scripted brain is the operator's: through the state directory's socket.
            try await service.start()
            let run = try await service.local([
                "agent", "run", "--brain", "scripted:\(Self.demoScript)", "write fizzbuzz",
            ])
            #expect(run.status == 0, "\(run.stderr)")
            let lines = run.stdout.split(separator: "\n").map(String.init)
            let id = try #require(lines.first)
            #expect(SessionID(id) != nil && id.hasPrefix("se-"))
            #expect(lines.dropFirst().first?.hasPrefix("[harness] took the session at event 2, lease epoch 2") == true)
            #expect(lines.contains { $0.hasPrefix("[sandbox] main is sb-") })
            #expect(lines.contains { $0.hasPrefix("[sandbox] check is sb-") })
            #expect(lines.contains("[tool] bash [main] $ python3 fizzbuzz.py | tr '\\n' ' '; echo"))
            #expect(lines.contains("    1 2 Fizz 4 Fizz Fizz 7 8 Fizz Fizz 11 Fizz 13 14 FizzBuzz "))
            #expect(lines.contains("    1 2 Fizz 4 Buzz Fizz 7 8 Fizz Buzz 11 Fizz 13 14 FizzBuzz "))
            #expect(lines.last == "[end] end_turn after 6 turns")
            #expect(run.stderr.isEmpty, "\(run.stderr)")

            let idle = try await service.local(["agent", "wake", id])
            #expect(idle.status == 0, "\(idle.stderr)")
            #expect(idle.stdout == id + "\n")
            #expect(
                idle.stderr
                    == "corral: session \(id) has ended (end_turn); nothing to do. Pass --message to continue it.\n")

            let more = try await service.local(["agent", "wake", id, "--message", "and now?", "--json"])
            #expect(more.status == 0, "\(more.stderr)")
            let events = more.stdout.split(separator: "\n").dropFirst().map {
                try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8))
            }
            #expect(
                events.map { $0?["type"]?.stringValue } == [
                    "harness.woke", "user.message", "brain.response", "session.ended",
                ])

            let refused = try await service.local(["agent", "wake", id, "--brain", "openai"])
            #expect(refused.status == 2)
            #expect(refused.stderr.hasPrefix("corral: --brain and --model cannot be changed through a corral service"))
            // A network tenant may not name a script: it is a file on the service's host.
            let alice = try await service.token(for: "alice")
            let scripted = try await service.remote(
                ["agent", "run", "--brain", "scripted:\(Self.demoScript)", "write fizzbuzz"], token: alice)
            #expect(scripted.status == 1)
            #expect(scripted.stderr.hasPrefix("corral: scripted brains are for the local tenant only\nhint: "))
        }
    }

    @Test("the run goes on when its client goes away; agent stop stops it, and wake continues it")
    func agentStop() async throws {
        try await ServiceFixture.with { service in
            try await service.start()
            let script = service.state.appendingPathComponent("gated.jsonl")
            func gate(_ name: String) -> String {
                #"{"tool_calls": [{"name": "bash", "input": {"command": "while [ ! -e /tmp/\#(name) ]; do sleep 0.1; done; echo passed \#(name)"}}]}"#
            }
            try [gate("go"), #"{"text": "Done."}"#, gate("never"), #"{"text": "Done again."}"#].joined(separator: "\n")
                .write(to: script, atomically: true, encoding: .utf8)

            // Found through the state directory's socket: the run belongs to the service.
            let first = try service.localBackground([
                "agent", "run", "--brain", "scripted:\(script.path)", "wait at the gate",
            ])
            defer { first.kill() }
            let sandboxLine = try await onOwnThread {
                try first.waitForLine("naming the sandbox") { $0.hasPrefix("[sandbox] main is ") }
            }
            let sandbox = try #require(sandboxLine.split(separator: " ").dropFirst(3).first.map(String.init))
            let id = try #require(first.lines.first)
            first.kill()
            let tail = try service.localBackground(["session", "tail", id, "--from", "1"])
            defer { tail.kill() }
            let opened = try await service.local(["exec", sandbox, "--", "touch", "/tmp/go"])
            #expect(opened.status == 0, "\(opened.stderr)")
            try await onOwnThread { try tail.waitForLine("for the end") { $0.contains("  session.ended  ") } }
            let log = try await service.local(["session", "show", id])
            #expect(log.stdout.contains("passed go"))

            let second = try service.localBackground(["agent", "wake", id, "--message", "once more"])
            defer { second.kill() }
            try await onOwnThread { try second.waitForLine("for the gated call") { $0.contains("/tmp/never") } }
            let stopped = try await service.local(["agent", "stop", id])
            #expect(stopped.status == 0, "\(stopped.stderr)")
            #expect(stopped.stdout == id + "\n")
            let followed = try await onOwnThread { try second.waitForExit() }
            #expect(followed.status == 1)
            #expect(
                followed.stderr
                    == "corral: the run of session \(id) was stopped\nhint: `corral agent wake \(id)` continues it\n")
            let again = try await service.local(["agent", "stop", id])
            #expect(again.status == 0 && again.stderr.contains("had no run going"))

            let resumed = try await service.local(["agent", "wake", id])
            #expect(resumed.status == 0, "\(resumed.stderr)")
            let lines = resumed.stdout.split(separator: "\n").map(String.init)
            #expect(lines.first == id)
            #expect(
                lines.contains { $0.hasPrefix("[harness] took the session at event ") && $0.contains("lease epoch 4") })
            #expect(lines.contains { $0.hasPrefix("[brain] turn 4 (") && $0.hasSuffix("): Done again.") })
            #expect(lines.last?.hasPrefix("[end] end_turn") == true)
        }
    }

    @Test("another tenant's session is as missing as one that does not exist, on every command")
    func tenantsApart() async throws {
        try await ServiceFixture.with { service in
            let alice = try await service.token(for: "alice")
            let bob = try await service.token(for: "bob")
            try await service.start()
            let id = try await service.remote(["session", "create"], token: alice).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let missing = "se-missing00000"
            let commands: [([String], String?)] = [
                (["session", "show", "ID"], nil), (["session", "append", "ID"], #"{"type":"x"}"#),
                (["session", "tail", "ID"], nil), (["session", "wake", "ID"], nil),
                (["session", "fork", "ID", "--at", "0"], nil),
                (["agent", "wake", "ID"], nil), (["agent", "stop", "ID"], nil),
            ]
            for (template, stdin) in commands {
                let theirs = try await service.remote(template.map { $0 == "ID" ? id : $0 }, token: bob, stdin: stdin)
                let absent = try await service.remote(
                    template.map { $0 == "ID" ? missing : $0 }, token: bob, stdin: stdin)
                #expect(theirs.status != 0 && theirs.status == absent.status, "\(template)")
                #expect(theirs.stderr == absent.stderr.replacingOccurrences(of: missing, with: id), "\(template)")
                #expect(
                    theirs.stderr.hasPrefix("corral: session \(id) not found\nhint: "), "\(template): \(theirs.stderr)")
                #expect(theirs.stdout.isEmpty)
            }
            #expect(try await service.remote(["session", "ls"], token: bob).stdout.contains(id) == false)
            #expect(try await service.remote(["session", "show", id], token: alice).status == 0)

            // Found by its socket, the service answers as the local tenant: alice's session is not listed...
            let local = try await service.local(["session", "ls"])
            #expect(local.status == 0 && !local.stdout.contains(id))
            let chosen = try await service.local(["session", "create", "--tenant", "alice"])
            #expect(
                chosen.status == 2
                    && chosen.stderr.hasPrefix("corral: --tenant cannot be chosen through a corral service"))
            #expect(try await service.local(["session", "create", "--tenant", "local"]).status == 0)
            // ...while the files, read without the service, hold it.
            service.kill()
            let files = try await service.local(["session", "ls"])
            #expect(files.stdout.contains(id))
        }
    }

    @Test("a bad or missing token: one line saying so, a hint, nothing else")
    func badToken() async throws {
        try await ServiceFixture.with { service in
            _ = try await service.token(for: "alice")
            try await service.start()
            for (token, message) in [
                ("corral_not-a-token", "the bearer token is not valid"), (nil, "this request needs a bearer token"),
            ] {
                for arguments in [
                    ["session", "ls"], ["session", "create"],
                    ["agent", "run", "--brain", "scripted:\(Self.demoScript)", "x"],
                ] {
                    let result = try await service.remote(arguments, token: token)
                    #expect(result.status == 1, "\(arguments)")
                    #expect(result.stdout.isEmpty)
                    let lines = result.stderr.split(separator: "\n", omittingEmptySubsequences: false)
                    #expect(lines.count == 3 && lines[2].isEmpty, "\(result.stderr)")
                    #expect(lines.first == "corral: \(message)"[...], "\(arguments)")
                    #expect(lines.dropFirst().first?.hasPrefix("hint: set CORRAL_TOKEN") == true)
                }
            }
        }
    }
}
