import CorralAPI
import CorralCore
import CorralSandbox
import CorralServer
import Foundation
import TestSupport
import Testing

/// Security review (low): a command kept running, for ever without a timeout, after the client
/// that started it disconnected.
@Suite("A command stops when its client goes away", .engine, .timeLimit(.minutes(5)))
struct DisconnectTests {
    // Security review, low finding: the streaming exec route.
    @Test("exec: dropping the connection kills `sleep 1000` in the sandbox within seconds")
    func streamingExec() async throws {
        try await check(route: "exec", json: #"{"command": ["sleep", "1000"]}"#)
    }

    // Security review, low finding: the blocking execute route.
    @Test("execute: dropping the connection kills `sleep 1000` in the sandbox within seconds")
    func blockingExecute() async throws {
        try await check(
            route: "execute", json: #"{"name": "bash", "input": {"command": "sleep 1000", "timeout": 900}}"#)
    }

    func check(route: String, json: String) async throws {
        try await ServerFixture.with { fixture in
            let token = fixture.tokenA
            try await LiveServer.with(fixture) { live in
                let sandbox = try await UploadTests.makeSandbox(live, token: token)
                let client = try live.connect()
                _ = try await runOnThread {
                    client.send(
                        ConnectionLimitTests.request(
                            "POST", "/v1/sandboxes/\(sandbox)/\(route)", token: token, json: json))
                }
                var running = 0
                for _ in 0..<50 where running == 0 {
                    try await Task.sleep(for: .milliseconds(200))
                    running = try await Self.sleepers(live, sandbox: sandbox, token: token)
                }
                #expect(running == 1, "the command never started")
                client.closeNow()
                var left = running
                for _ in 0..<25 where left > 0 {
                    try await Task.sleep(for: .milliseconds(200))
                    left = try await Self.sleepers(live, sandbox: sandbox, token: token)
                }
                #expect(left == 0, "`sleep 1000` still runs 5 s after its client went away")
            }
        }
    }

    /// How many `sleep 1000` processes run in the sandbox.
    static func sleepers(_ live: LiveServer, sandbox: String, token: String) async throws -> Int {
        let script =
            #"n=0; for f in /proc/[0-9]*/cmdline; do [ \"$(tr '\\0' ' ' < $f 2>/dev/null)\" = 'sleep 1000 ' ] && n=$((n+1)); done; echo $n"#
        let body = #"{"name": "bash", "input": {"command": "\#(script)"}}"#
        let response = try await UploadTests.call(
            live, "POST", "/v1/sandboxes/\(sandbox)/execute", token: token, body: Array(body.utf8))
        let output = try JSONDecoder().decode(ToolOutput.self, from: Data(response.body))
        return Int(output.text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }
}
