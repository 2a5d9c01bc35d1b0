import CorralCore
import Foundation
import TestSupport
import Testing

/// A state directory of the test's own, so that its sandboxes are its own.
struct CLIHarness {
    let stateDirectory: URL
    let label: String

    init() throws {
        stateDirectory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-cli-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: stateDirectory, withIntermediateDirectories: true)
        label = "clitest-\(UUID().uuidString.prefix(8).lowercased())"
    }

    var environment: [String: String] {
        ["CORRAL_STATE_DIR": stateDirectory.path, "CORRAL_ENGINE": TestEnvironment.engineEndpoint]
    }

    func corral(_ arguments: [String], stdin: Data? = nil) async throws -> ProcessResult {
        try await runCorral(arguments, environment: environment, stdin: stdin)
    }

    /// Sandboxes this test made that still exist, found by the label it gave them.
    func leftovers() async throws -> [String] {
        let result = try await corral(["sandbox", "ls", "--json"])
        let listed = try JSONDecoder().decode([JSONValue].self, from: Data(result.stdout.utf8))
        return listed.filter { $0["labels"]?["test"]?.stringValue == label }.compactMap { $0["id"]?.stringValue }
    }

    /// For a `defer`, which cannot wait for a task: blocks, briefly, at the test's end.
    func cleanUp() {
        if let result = try? runCorralBlocking(["sandbox", "ls", "--json"], environment: environment),
            let listed = try? JSONDecoder().decode([JSONValue].self, from: Data(result.stdout.utf8))
        {
            let ids = listed.filter { $0["labels"]?["test"]?.stringValue == label }.compactMap { $0["id"]?.stringValue }
            if !ids.isEmpty { _ = try? runCorralBlocking(["sandbox", "rm"] + ids, environment: environment) }
        }
        try? FileManager.default.removeItem(at: stateDirectory)
    }
}

@Suite("The corral command line against a real engine", .engine)
struct SandboxCLITests {
    @Test("corral run passes the command's exit status through and removes its sandbox")
    func runExitStatus() async throws {
        let cli = try CLIHarness()
        defer { cli.cleanUp() }
        let failing = try await cli.corral([
            "run", "--label", "test=\(cli.label)", "--", "bash", "-c", "echo out; echo err >&2; exit 7",
        ])
        #expect(failing.status == 7)
        #expect(failing.stdout == "out\n")
        #expect(failing.stderr.contains("err"))
        let passing = try await cli.corral(["run", "--label", "test=\(cli.label)", "--", "true"])
        #expect(passing.status == 0)
        let timedOut = try await cli.corral([
            "run", "--label", "test=\(cli.label)", "--timeout", "1s", "--", "sleep", "30",
        ])
        #expect(timedOut.status == 124)
        #expect(timedOut.stderr.contains("timed out after 1s"))
        #expect(try await cli.leftovers().isEmpty)
    }

    @Test("create, ls, exec, tool, cp and rm work together")
    func workflow() async throws {
        let cli = try CLIHarness()
        defer { cli.cleanUp() }
        let created = try await cli.corral([
            "sandbox", "create", "--label", "test=\(cli.label)", "--memory", "512m", "--json",
        ])
        #expect(created.status == 0, "\(created.stderr)")
        let object = try JSONDecoder().decode(JSONValue.self, from: Data(created.stdout.utf8))
        let id = try #require(object["id"]?.stringValue)
        #expect(object["path"]?.stringValue == "cold")

        let listed = try await cli.corral(["sandbox", "ls"])
        #expect(listed.stdout.contains(id))

        let exec = try await cli.corral([
            "exec", "--env", "X=1", "--workdir", "/tmp", id, "--", "bash", "-c", "echo $X; pwd; exit 5",
        ])
        #expect(exec.status == 5)
        #expect(exec.stdout == "1\n/tmp\n")

        let tool = try await cli.corral(["tool", id, "bash", #"{"command": "echo tool-ran"}"#])
        #expect(tool.status == 0)
        #expect(tool.stdout == "tool-ran\n")
        let toolError = try await cli.corral(["tool", id, "bash", #"{"command": "exit 2"}"#])
        #expect(toolError.status == 1)
        let badJSON = try await cli.corral(["tool", id, "bash", "{not json"])
        #expect(badJSON.status != 0)
        #expect(badJSON.stderr.hasPrefix("corral: the tool input is not valid JSON"))

        let host = cli.stateDirectory.appendingPathComponent("in.txt")
        try Data("payload\n".utf8).write(to: host)
        #expect(try await cli.corral(["cp", host.path, "\(id):/workspace/in.txt"]).status == 0)
        let out = cli.stateDirectory.appendingPathComponent("out.txt")
        #expect(try await cli.corral(["cp", "\(id):/workspace/in.txt", out.path]).status == 0)
        #expect(try String(contentsOf: out, encoding: .utf8) == "payload\n")

        let removed = try await cli.corral(["sandbox", "rm", id])
        #expect(removed.status == 0)
        let again = try await cli.corral(["sandbox", "rm", id])
        #expect(again.status != 0)
        #expect(again.stderr.contains("not found"))
    }

    @Test(
        "bad input ends with one clear line, a non-zero status and nothing left behind",
        arguments: [
            (["sandbox", "create", "--memory", "lots"], "invalid size 'lots'"),
            (["sandbox", "create", "--cpus=-2"], "invalid --cpus '-2'"),
            (["sandbox", "create", "--cpus", "many"], "invalid --cpus 'many'"),
            (["sandbox", "create", "--pids", "0"], "invalid --pids '0'"),
            (["sandbox", "create", "--cpus", "-2"], "Missing value for '--cpus <N>'"),
            (["sandbox", "create", "--ttl", "soon"], "invalid duration 'soon'"),
            (
                ["sandbox", "create", "--image", "corral/does-not-exist:1"],
                "image 'corral/does-not-exist:1' is not on the engine"
            ),
            (["sandbox", "create", "--runtime", "nope-runtime"], "runtime 'nope-runtime' is not registered"),
            (["sandbox", "inspect", "sb-doesnotexist1"], "sandbox sb-doesnotexist1 not found"),
            (["sandbox", "rm", "../../etc"], "invalid sandbox id '../../etc'"),
            (["exec", "sb-doesnotexist1", "--", "true"], "sandbox sb-doesnotexist1 is gone"),
            (["cp", "/etc/hostname", "sb-doesnotexist1:/workspace/../../etc"], "contains '.' or '..'"),
            (["cp", "/etc/hostname", "Bad_ID:/workspace"], "invalid sandbox id 'Bad_ID'"),
        ])
    func badInput(arguments: [String], message: String) async throws {
        let cli = try CLIHarness()
        defer { cli.cleanUp() }
        var withLabel = arguments
        if arguments.starts(with: ["sandbox", "create"]) { withLabel += ["--label", "test=\(cli.label)"] }
        let result = try await cli.corral(withLabel)
        #expect(result.status != 0)
        let firstLine = result.stderr.split(separator: "\n").first.map(String.init) ?? ""
        #expect(firstLine.hasPrefix("corral: "), "stderr: \(result.stderr)")
        #expect(firstLine.contains(message), "stderr: \(result.stderr)")
        #expect(try await cli.leftovers().isEmpty)
    }

    @Test("a 50 MB output flood leaves corral's memory bounded: its peak barely moves")
    func floodMemory() async throws {
        let cli = try CLIHarness()
        defer { cli.cleanUp() }
        let id = try await cli.corral(["sandbox", "create", "--label", "test=\(cli.label)"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        /// Peak resident memory, in KiB, of `corral tool` running `command`, as the kernel
        /// accounts it for a child process.
        func peak(_ command: String) async throws -> Int {
            let script = """
                import json, os, resource, subprocess, sys
                r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                print(len(r.stdout), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
                """
            let input = #"{"command": "\#(command)"}"#
            let result = try await runCorral(
                ["-c", script, BuiltProducts.path("corral"), "tool", id, "bash", input],
                environment: [
                    "CORRAL_STATE_DIR": cli.stateDirectory.path, "CORRAL_ENGINE": TestEnvironment.engineEndpoint,
                ],
                executable: "/usr/bin/python3")
            let fields = result.stdout.split(separator: " ").compactMap {
                Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            guard fields.count == 2 else {
                throw CorralError(.internalError, "unexpected output: \(result.stdout) \(result.stderr)")
            }
            #expect(fields[0] < 200_000, "the printed output is capped")
            return fields[1]
        }
        let quiet = try await peak("echo hi")
        let flood = try await peak("head -c 50000000 /dev/zero | tr '\\\\0' x")
        #expect(flood - quiet < 40 * 1024, "peak grew by \(flood - quiet) KiB for 50 MB of output")
    }

    @Test("a tar with traversal on stdin is refused and nothing lands in the sandbox")
    func traversalOnStdin() async throws {
        let cli = try CLIHarness()
        defer { cli.cleanUp() }
        let id = try await cli.corral(["sandbox", "create", "--label", "test=\(cli.label)"]).stdout.trimmingCharacters(
            in: .whitespacesAndNewlines)
        // Built by python's tarfile, as an attacker would.
        let tarball = cli.stateDirectory.appendingPathComponent("evil.tar")
        let script = """
            import tarfile, io
            with tarfile.open('\(tarball.path)', 'w') as t:
                for name in ['ok.txt', '../../escaped.txt']:
                    data = b'x'
                    info = tarfile.TarInfo(name); info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
            """
        let python = try ChildProcess.run("/usr/bin/env", ["python3", "-c", script])
        try #require(python.termination.succeeded, "\(python.reason)")
        let result = try await cli.corral(["cp", "-", "\(id):/workspace"], stdin: try Data(contentsOf: tarball))
        #expect(result.status != 0)
        #expect(result.stderr.contains("../../escaped.txt"))
        let listing = try await cli.corral([
            "exec", id, "--", "bash", "-c", "ls -A /workspace; ls / | grep -c escaped || true",
        ])
        #expect(listing.stdout == "0\n")
    }
}

@Suite("The command line without an engine")
struct NoEngineCLITests {
    @Test("an engine that is not running gives one line naming the socket, and a hint")
    func deadEngine() async throws {
        let socket = "/tmp/corral-missing-\(UUID().uuidString.prefix(6)).sock"
        let result = try await runCorral(
            ["sandbox", "ls"],
            environment: ["CORRAL_ENGINE": "unix://\(socket)", "CORRAL_STATE_DIR": NSTemporaryDirectory()])
        #expect(result.status == 69)
        #expect(
            result.stderr.hasPrefix(
                "corral: cannot connect to unix://\(socket): no such socket\nhint: start the engine"))
    }

    @Test(
        "an engine that refuses corral's API versions is named, with a hint",
        arguments: [
            (#"{"Version":"29.0.0","ApiVersion":"1.52","MinAPIVersion":"1.50"}"#, "refuses API versions below 1.50"),
            (#"{"Version":"17.03","ApiVersion":"1.26","MinAPIVersion":"1.12"}"#, "speaks API 1.26 at most"),
        ])
    func refusedVersion(version: String, message: String) async throws {
        let path = "/tmp/corral-oldengine-\(UUID().uuidString.prefix(6)).sock"
        let server = try StubHTTPServer(unixSocket: path) { request, connection in
            if request.target == "/_ping" {
                connection.respond(status: 200, headers: ["Api-Version": "1.26"], body: Array("OK".utf8))
            } else if request.target == "/version" {
                connection.respond(status: 200, json: version)
            } else {
                connection.respond(status: 400, json: #"{"message":"client version is too old"}"#)
            }
            return true
        }
        defer { server.stop() }
        let result = try await runCorral(
            ["sandbox", "ls"],
            environment: ["CORRAL_ENGINE": "unix://\(path)", "CORRAL_STATE_DIR": NSTemporaryDirectory()])
        #expect(result.status != 0)
        #expect(result.stderr.hasPrefix("corral: the engine at unix://\(path)"))
        #expect(result.stderr.contains(message))
        #expect(result.stderr.contains("hint: "))
    }

    @Test("global options work before the subcommand, as with docker")
    func globalOptionsFirst() async throws {
        let socket = "/tmp/corral-missing-\(UUID().uuidString.prefix(6)).sock"
        let result = try await runCorral([
            "--engine", "unix://\(socket)", "--state-dir", NSTemporaryDirectory(), "sandbox", "ls",
        ])
        #expect(result.stderr.contains(socket))
    }
}

@Suite("Workspace flags on the command line")
struct WorkspaceFlagTests {
    @Test("--repo and --allow-host without a running service fail in one line, with a hint to start one")
    func needsService() async throws {
        let cli = try CLIHarness()
        defer { cli.cleanUp() }
        for (arguments, what) in [
            (["--repo", "github.com/acme/rocket", "--write"], "cloning github.com/acme/rocket needs the gateway"),
            (["--allow-host", "pypi.org"], "egress to pypi.org needs the gateway"),
        ] {
            let result = try await cli.corral(["sandbox", "create"] + arguments)
            #expect(result.status != 0)
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.first?.contains(what) == true, "\(result.stderr)")
            #expect(
                lines.count == 2 && lines[1].hasPrefix("hint: ") && lines[1].contains("corral serve"),
                "\(result.stderr)")
        }
        let stray = try await cli.corral(["run", "--write", "--", "true"])
        #expect(stray.status != 0)
        #expect(stray.stderr.contains("--write needs --repo"), "\(stray.stderr)")
    }
}
