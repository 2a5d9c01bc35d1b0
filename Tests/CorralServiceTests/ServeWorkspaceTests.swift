import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import TestSupport
import Testing

@testable import CorralService

@Suite("corral serve with the gateway, driven by the corral command line", .engine, .serialized)
struct ServeWorkspaceTests {
    @Test(
        "vault put, then sandbox create --repo --write through the service, exec git, push, rm: the token is in no output and no log line"
    )
    func commandLine() async throws {
        let directory = URL(fileURLWithPath: "/tmp/cs-\(UUID().uuidString.prefix(8).lowercased())", isDirectory: true)
        let state = directory.appendingPathComponent("state", isDirectory: true)
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        let token = "tok_\(UUID().uuidString)"
        let upstream = try GitHTTPServer(root: directory.appendingPathComponent("upstream"), tokens: [token])
        try upstream.createRepository(owner: "acme", name: "rocket", files: ["README.md": "rocket\n"])
        let template = "w-\(UUID().uuidString.prefix(6).lowercased())"
        let config = directory.appendingPathComponent("corral.toml")
        try Data(
            """
            [service]
            check_interval = "1s"

            [[templates]]
            name = "\(template)"
            image = "\(TestEnvironment.baseImage)"
            memory = "256m"
            ttl = "15m"

            [templates.pool]
            min_idle = 1
            max_total = 3
            """.utf8
        ).write(to: config)
        let environment = [
            "CORRAL_STATE_DIR": state.path, "CORRAL_ENGINE": TestEnvironment.engineEndpoint,
            "CORRAL_CONFIG": config.path, "CORRAL_LOG": "trace",
        ]
        var outputs: [String] = []
        func corral(_ arguments: [String], stdin: Data? = nil) async throws -> ProcessResult {
            let result = try await runCorral(arguments, environment: environment, stdin: stdin)
            outputs.append(result.stdout + result.stderr)
            return result
        }
        let serverLog = directory.appendingPathComponent("serve.log")
        _ = FileManager.default.createFile(atPath: serverLog.path, contents: nil)
        var server: ChildProcess?
        defer {
            server?.signal(SIGTERM)
            server?.wait()
            upstream.stop()
            try? FileManager.default.removeItem(at: directory)
        }
        do {
            let stored = try await corral(
                ["vault", "put", "upstream", "--scope", "127.0.0.1:\(upstream.port)/acme"], stdin: Data(token.utf8))
            #expect(stored.status == 0, "\(stored.stderr)")

            let log = try FileHandle(forWritingTo: serverLog)
            server = try ChildProcess.spawn(
                BuiltProducts.path("corral"), ["serve", "--listen", ""],
                environment: ProcessInfo.processInfo.environment.merging(environment) { _, new in new },
                stdout: log.fileDescriptor, stderr: log.fileDescriptor)
            try await waitUntil("the service answers and its pool is full", limit: .seconds(120)) {
                let pools = try await runCorral(["pool", "ls", "--json"], environment: environment)
                guard pools.status == 0,
                    let list = try? JSONDecoder().decode([JSONValue].self, from: Data(pools.stdout.utf8))
                else { return false }
                return list.first?["counts"]?["idle"]?.intValue == 1
            }

            let created = try await corral([
                "sandbox", "create", "--template", template, "--repo",
                "http://127.0.0.1:\(upstream.port)/acme/rocket.git", "--write", "--json",
            ])
            #expect(created.status == 0, "\(created.stderr)")
            let object = try JSONDecoder().decode(JSONValue.self, from: Data(created.stdout.utf8))
            let id = try #require(object["id"]?.stringValue)
            #expect(object["path"]?.stringValue == "warm")

            let pushed = try await corral([
                "exec", id, "--", "sh", "-c",
                "cat README.md && echo more >> README.md && git commit -qam more && git push -q && git status -sb | head -1",
            ])
            #expect(pushed.status == 0, "\(pushed.stderr)")
            #expect(pushed.stdout == "rocket\n## corral/\(id)\n", "\(pushed.stdout)")
            #expect(upstream.head(owner: "acme", name: "rocket", branch: "corral/\(id)") != nil)

            let inspected = try await corral(["sandbox", "inspect", id])
            let info = try JSONDecoder().decode(JSONValue.self, from: Data(inspected.stdout.utf8))
            #expect(info["workspace"]?["repository"]?.stringValue == "127.0.0.1:\(upstream.port)/acme/rocket")
            #expect(info["workspace"]?["branch"]?.stringValue == "corral/\(id)")

            let removed = try await corral(["sandbox", "rm", id])
            #expect(removed.status == 0, "\(removed.stderr)")
            server?.signal(SIGTERM)
            server?.wait()
            try? log.close()
        } catch {
            await Self.removeContainers(state: state)
            throw error
        }
        await Self.removeContainers(state: state)

        let logged = try String(contentsOf: serverLog, encoding: .utf8)
        #expect(logged.contains("gateway decision"), "the service logged its decisions")
        #expect(logged.contains("workspace cloned"))
        let spellings = [token, Data("x-access-token:\(token)".utf8).base64EncodedString()]
        for spelling in spellings {
            #expect(!logged.contains(spelling), "the token is in the service's log")
            #expect(!outputs.contains { $0.contains(spelling) }, "the token is in a command's output")
        }
    }

    /// Removes the instance's containers (idle pool members stay after a SIGTERM, by design).
    static func removeContainers(state: URL) async {
        guard let engine = try? DockerEngineClient(parsing: TestEnvironment.engineEndpoint) else { return }
        defer { engine.shutdown() }
        let left = try? await Provisioner.removeEverything(
            engine: engine, sandboxesDirectory: state.appendingPathComponent("sandboxes"))
        #expect(left?.isEmpty != false, "left behind: \(left ?? [])")
    }
}
