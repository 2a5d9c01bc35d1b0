import CorralCore
import Foundation
import TestSupport
import Testing

@testable import CorralHarness

/// `corral agent run` and `corral agent wake` as a user runs them.
@Suite("corral agent on the command line")
struct CLITests {
    static let script = """
        # two turns with corral's own tools, then an answer
        {"text": "Looking at the log.", "tool_calls": [{"name": "session_events", "input": {"limit": 2}}]}
        {"tool_calls": [{"name": "sandboxes", "input": {}}]}
        {"text": "Nothing to do here."}
        """

    func environment(_ directory: URL) -> [String: String] {
        ["CORRAL_STATE_DIR": directory.path, "ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": "", "CORRAL_LOG": "error"]
    }

    @Test("with no key and no --brain, the error says what to do")
    func noBrain() async throws {
        try await withTemporaryDirectory { directory in
            let result = try await runCorral(["agent", "run", "do something"], environment: environment(directory))
            #expect(result.status == 2)
            #expect(result.stderr.hasPrefix("corral: no brain chosen, and ANTHROPIC_API_KEY is not set\nhint: "))
            #expect(result.stderr.contains("--brain scripted:FILE"))
            #expect(result.stdout.isEmpty)
            let openai = try await runCorral(
                ["agent", "run", "--brain", "openai", "x"], environment: environment(directory))
            #expect(openai.stderr.contains("OPENAI_API_KEY is not set"))
            let unknown = try await runCorral(
                ["agent", "run", "--brain", "llama", "x"], environment: environment(directory))
            #expect(unknown.stderr.contains("unknown brain 'llama'"))
        }
    }

    @Test("a brain key stored in the vault under the API's host is used when the environment has none")
    func keyFromVault() async throws {
        let server = try BrainServer(.anthropic) { _ in .turn(text: "Done.", calls: []) }
        defer { server.stop() }
        try await withTemporaryDirectory { directory in
            var environment = environment(directory)
            environment["ANTHROPIC_BASE_URL"] = server.baseURL
            let host = try #require(
                URLComponents(string: server.baseURL).flatMap { c in c.port.map { "127.0.0.1:\($0)" } })
            // Before the key is stored, the error names the vault and the scope to use.
            let missing = try await runCorral(["agent", "run", "--brain", "anthropic", "x"], environment: environment)
            #expect(missing.status == 2)
            #expect(missing.stderr.contains("corral vault put anthropic --scope \(host)"), "\(missing.stderr)")
            let put = try await runCorral(
                ["vault", "put", "anthropic", "--scope", host], environment: environment,
                stdin: Data((server.apiKey + "\n").utf8))
            #expect(put.status == 0, "\(put.stderr)")
            let noKey = try await runCorral(["agent", "run", "--brain", "openai", "x"], environment: environment)
            #expect(noKey.stderr.contains("OPENAI_API_KEY is not set and the vault holds none for api.openai.com"))
            #expect(noKey.stderr.contains("corral vault put openai --scope api.openai.com"))

            // No --brain: the stored key makes Anthropic the default.
            let run = try await runCorral(
                ["agent", "run", "--model", "claude-test", "say done"], environment: environment)
            #expect(run.status == 0, "\(run.stderr)")
            #expect(run.stdout.contains("Done."))
            #expect(server.requests.count == 1)
            #expect(server.problems.isEmpty, "\(server.problems)")
            #expect(!run.stdout.contains(server.apiKey) && !run.stderr.contains(server.apiKey))
            let id = try #require(run.stdout.split(separator: "\n").first.map(String.init))
            let show = try await runCorral(["session", "show", id, "--json"], environment: environment)
            #expect(show.status == 0 && !show.stdout.contains(server.apiKey))

            // A vault whose key file is gone stands in no one's way when the environment has
            // the key; without it, the error says what is missing.
            try FileManager.default.removeItem(at: directory.appendingPathComponent("vault.key"))
            var keyed = environment
            keyed["ANTHROPIC_API_KEY"] = server.apiKey
            let withEnvironment = try await runCorral(
                ["agent", "run", "--model", "claude-test", "again"], environment: keyed)
            #expect(withEnvironment.status == 0, "\(withEnvironment.stderr)")
            let lost = try await runCorral(["agent", "run", "--brain", "anthropic", "x"], environment: environment)
            #expect(lost.status != 0)
            #expect(lost.stderr.contains("vault.key"), "\(lost.stderr)")
        }
    }

    @Test(
        "run prints the session id first, then the steps; wake of an ended session does nothing; --message continues it"
    )
    func scriptedRun() async throws {
        try await withTemporaryDirectory { directory in
            let script = directory.appendingPathComponent("script.jsonl")
            try Self.script.write(to: script, atomically: true, encoding: .utf8)
            let run = try await runCorral(
                ["agent", "run", "--brain", "scripted:\(script.path)", "look around"],
                environment: environment(directory))
            #expect(run.status == 0, "\(run.stderr)")
            let lines = run.stdout.split(separator: "\n").map(String.init)
            let id = try #require(lines.first)
            #expect(SessionID(id) != nil && id.hasPrefix("se-"))
            #expect(
                lines.contains { $0.hasPrefix("[brain] turn 1 (") && $0.hasSuffix(" tokens): Looking at the log.") })
            #expect(lines.contains("[tool] session_events {\"limit\":2}"))
            #expect(lines.last == "[end] end_turn after 3 turns")

            let idle = try await runCorral(["agent", "wake", id], environment: environment(directory))
            #expect(idle.status == 0)
            #expect(idle.stdout == id + "\n")
            #expect(idle.stderr.contains("has ended (end_turn); nothing to do"))

            let more = try await runCorral(
                ["agent", "wake", id, "--message", "and now?", "--json"], environment: environment(directory))
            #expect(more.status == 0, "\(more.stderr)")
            let events = try more.stdout.split(separator: "\n").dropFirst().map { try JSONCodec.decode(String($0)) }
            #expect(
                events.map { $0["type"]?.stringValue } == [
                    "harness.woke", "user.message", "brain.response", "session.ended",
                ])
            #expect(events[2]["data"]?["content"]?.arrayValue?.first?["text"] == "(the script has no more turns)")

            let show = try await runCorral(["session", "show", id], environment: environment(directory))
            #expect(show.stdout.contains("tool.intent"))
        }
    }

    @Test("a bad script, a template or a repo that cannot be honoured: refused before anything runs")
    func refusals() async throws {
        try await withTemporaryDirectory { directory in
            let script = directory.appendingPathComponent("bad.jsonl")
            try "{\"text\": \"fine\"}\n{\"tool_calls\": \"bash\"}\n".write(
                to: script, atomically: true, encoding: .utf8)
            let bad = try await runCorral(
                ["agent", "run", "--brain", "scripted:\(script.path)", "x"], environment: environment(directory))
            #expect(bad.status == 2)
            #expect(bad.stderr.contains("bad.jsonl line 2: 'tool_calls' must be an array"))
            let missing = try await runCorral(
                ["agent", "run", "--brain", "scripted:/nonexistent.jsonl", "x"], environment: environment(directory))
            #expect(missing.stderr.contains("cannot read the brain script /nonexistent.jsonl"))

            let good = directory.appendingPathComponent("good.jsonl")
            try Self.script.write(to: good, atomically: true, encoding: .utf8)
            let template = try await runCorral(
                ["agent", "run", "--brain", "scripted:\(good.path)", "--template", "python", "x"],
                environment: environment(directory))
            #expect(template.status == 1)
            #expect(template.stderr.contains("no template 'python' in the configuration"))
            let repo = try await runCorral(
                ["agent", "run", "--brain", "scripted:\(good.path)", "--repo", "https://example.com/owner/a.git", "x"],
                environment: environment(directory))
            #expect(repo.stderr.contains("a repository workspace needs the gateway"))
            let sessions = try await runCorral(["session", "ls"], environment: environment(directory))
            #expect(!sessions.stdout.contains("se-"))
        }
    }
}
