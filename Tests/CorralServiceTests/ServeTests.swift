import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import TestSupport
import Testing

@testable import CorralService

extension Trait where Self == ConditionTrait {
    static var engine: ConditionTrait {
        .enabled(if: TestEnvironment.shouldRunEngineTests, Comment(rawValue: TestEnvironment.engineSkipReason))
    }
}

/// A state directory with a corral.toml of the test's own, the `corral` binary run against it,
/// and cleanup that removes every container of its instance, checked by label.
final class ServeHarness: @unchecked Sendable {
    let state: URL
    let config: URL
    let template: String
    private var server: ChildProcess?

    init(minIdle: Int = 2, setup: [String] = [], extraService: String = "") throws {
        state = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-serve-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        template = "t-\(UUID().uuidString.prefix(6).lowercased())"
        config = state.appendingPathComponent("corral.toml")
        let setupLine = setup.isEmpty ? "" : "setup = [\(setup.map { "\"\($0)\"" }.joined(separator: ", "))]\n"
        let text = """
            [service]
            check_interval = "1s"
            reap_interval = "1s"
            \(extraService)

            [[templates]]
            name = "\(template)"
            image = "\(TestEnvironment.baseImage)"
            memory = "128m"
            ttl = "15m"
            \(setupLine)
            [templates.pool]
            min_idle = \(minIdle)
            max_total = 10
            """
        try Data(text.utf8).write(to: config)
    }

    var environment: [String: String] {
        ["CORRAL_STATE_DIR": state.path, "CORRAL_ENGINE": TestEnvironment.engineEndpoint, "CORRAL_CONFIG": config.path]
    }

    func corral(_ arguments: [String]) async throws -> ProcessResult {
        try await runCorral(arguments, environment: environment)
    }

    /// Starts `corral serve` in the background, on its unix socket and a free loopback port
    /// (the default port may be taken by a service the developer runs).
    func startServer() throws {
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { _, new in new }
        server = try ChildProcess.spawn(
            BuiltProducts.path("corral"), ["serve", "--listen", "127.0.0.1:0"], environment: env)
    }

    func killServer(signal: Int32) {
        guard let server else { return }
        server.signal(signal)
        server.wait()
        self.server = nil
    }

    struct Pool: Decodable {
        var template: String
        var state: String
        var counts: [String: Int]
        var members: [Member]
        struct Member: Decodable {
            var id: String
            var state: String
        }
        func ids(_ state: String) -> Set<String> { Set(members.filter { $0.state == state }.map(\.id)) }
    }

    func pool() async throws -> Pool? {
        let result = try await corral(["pool", "ls", "--json"])
        guard result.status == 0 else { throw TimeoutError(what: "pool ls failed: \(result.stderr)") }
        return try JSONDecoder().decode([Pool].self, from: Data(result.stdout.utf8)).first { $0.template == template }
    }

    /// Polls `pool ls` (a separate process's view) until `condition` holds; bounded.
    @discardableResult
    func waitForPool(_ what: String, timeout: Duration = .seconds(90), _ condition: (Pool) -> Bool) async throws
        -> Pool
    {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let pool = try await pool(), condition(pool) { return pool }
            try await Task.sleep(for: .milliseconds(200))
        }
        let last = try? await pool()
        throw TimeoutError(what: "\(what); last: \(String(describing: last))")
    }

    /// Every container of this state directory's instance.
    func containers() async throws -> [ContainerSummary] {
        let instance = try SandboxRecordStore(directory: state.appendingPathComponent("sandboxes")).instanceID()
        let engine = try DockerEngineClient(parsing: TestEnvironment.engineEndpoint)
        return try await engine.listContainers(all: true, labels: ["corral.managed=1", "corral.instance=\(instance)"])
    }

    func cleanUp() async {
        killServer(signal: SIGKILL)
        if let engine = try? DockerEngineClient(parsing: TestEnvironment.engineEndpoint) {
            let left = try? await Provisioner.removeEverything(
                engine: engine, sandboxesDirectory: state.appendingPathComponent("sandboxes"))
            #expect(left?.isEmpty != false, "left behind: \(left ?? [])")
        }
        try? FileManager.default.removeItem(at: state)
    }
}

@Suite("corral serve, pool ls and warm claims from other processes", .engine, .serialized)
struct ServeTests {
    @Test("kill -9 of corral serve, mid-refill, then a restart: it adopts what is there and leaks nothing")
    func killAndRestart() async throws {
        // The setup's sleep is the window in which the test sees a member being made: each look
        // is a `corral pool ls` process, which takes seconds of its own on a loaded machine (a
        // 6 s window was once missed in a whole-suite run).
        let harness = try ServeHarness(minIdle: 2, setup: ["sleep 12"])
        do {
            try harness.startServer()
            let full = try await harness.waitForPool("2 idle") { $0.counts["idle"] == 2 && $0.state == "ready" }
            let claimed = try await harness.corral(["sandbox", "create", "--template", harness.template, "--json"])
            #expect(claimed.status == 0, "\(claimed.stderr)")
            let object = try JSONDecoder().decode(JSONValue.self, from: Data(claimed.stdout.utf8))
            #expect(object["path"]?.stringValue == "warm")
            let claimedID = try #require(object["id"]?.stringValue)
            #expect(full.ids("idle").contains(claimedID))
            // The server refills: a member is being made (its setup sleeps) when it dies.
            try await harness.waitForPool("a member being made") { $0.counts["preparing"] == 1 }
            harness.killServer(signal: SIGKILL)
            let afterKill = try #require(try await harness.pool())
            #expect(afterKill.state == "stopped", "a dead server's status is not believed")
            let survivors = afterKill.ids("idle")
            // The member being made may have finished in the moment between the look and the
            // kill (a look is a process of its own): then it is one more idle survivor.
            #expect(survivors.isSuperset(of: full.ids("idle").subtracting([claimedID])), "\(survivors)")
            #expect(survivors.count <= 2, "\(survivors)")

            try harness.startServer()
            let adopted = try await harness.waitForPool("adopted and refilled") {
                $0.state == "ready" && $0.counts["idle"] == 2 && $0.counts["preparing"] == 0
            }
            #expect(adopted.ids("idle").isSuperset(of: survivors), "idle members are adopted, not remade")
            #expect(adopted.ids("claimed") == [claimedID])
            // Exactly the pool's members and the claimed sandbox: the half-made one is gone.
            let names = try await harness.containers().map(\.name).sorted()
            #expect(names.count == 3, "\(names)")
            #expect(names.filter { $0.hasPrefix("corral-prep.") }.isEmpty)
            // The claimed sandbox lived through it all.
            #expect(try await harness.corral(["exec", claimedID, "--", "true"]).status == 0)
            harness.killServer(signal: SIGTERM)
            #expect(try await harness.pool()?.state == "stopped")
        } catch {
            await harness.cleanUp()
            throw error
        }
        await harness.cleanUp()
    }

    @Test("claims from several processes at once never share a member")
    func processesClaim() async throws {
        let harness = try ServeHarness(minIdle: 3)
        do {
            try harness.startServer()
            let full = try await harness.waitForPool("3 idle") { $0.counts["idle"] == 3 && $0.state == "ready" }
            // Stop the server so that the claimers see exactly these members.
            harness.killServer(signal: SIGTERM)
            let environment = harness.environment
            let results = try await withThrowingTaskGroup(of: (Int, ProcessResult).self) { group in
                for index in 0..<5 {
                    group.addTask {
                        let result = try await runCorral(
                            ["sandbox", "create", "--template", harness.template, "--json", "--env", "N=\(index)"],
                            environment: environment)
                        return (index, result)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }.sorted { $0.0 < $1.0 }.map(\.1)
            }
            var ids: [String] = []
            var warm: [String] = []
            for result in results {
                #expect(result.status == 0, "\(result.stderr)")
                let object = try JSONDecoder().decode(JSONValue.self, from: Data(result.stdout.utf8))
                let id = try #require(object["id"]?.stringValue)
                ids.append(id)
                if object["path"]?.stringValue == "warm" { warm.append(id) }
            }
            #expect(Set(ids).count == 5, "no two processes got the same sandbox")
            #expect(Set(warm) == full.ids("idle"), "each idle member went to exactly one process")
            // Env bound after each warm claim reaches its commands.
            for (index, result) in results.enumerated() {
                let object = try JSONDecoder().decode(JSONValue.self, from: Data(result.stdout.utf8))
                let id = try #require(object["id"]?.stringValue)
                let exec = try await harness.corral(["exec", id, "--", "sh", "-c", "echo $N"])
                #expect(exec.stdout == "\(index)\n")
            }
        } catch {
            await harness.cleanUp()
            throw error
        }
        await harness.cleanUp()
    }

    @Test("sandbox create --template: warm when a member is idle, cold otherwise; bad uses are refused")
    func createTemplate() async throws {
        let harness = try ServeHarness(minIdle: 1)
        do {
            let cold = try await harness.corral(["sandbox", "create", "--template", harness.template, "--json"])
            #expect(cold.status == 0, "\(cold.stderr)")
            #expect(cold.stdout.contains(#""path" : "cold""#))
            let unknown = try await harness.corral(["sandbox", "create", "--template", "nope"])
            #expect(unknown.status != 0)
            #expect(
                unknown.stderr.hasPrefix("corral: no template named 'nope'\nhint: known templates: \(harness.template)")
            )
            let mixed = try await harness.corral([
                "sandbox", "create", "--template", harness.template, "--memory", "1g",
            ])
            #expect(mixed.stderr.hasPrefix("corral: --memory cannot be combined with --template"))
            let empty = harness.state.appendingPathComponent("empty-state")
            let noConfig = try await runCorral(
                ["sandbox", "create", "--template", "base"],
                environment: ["CORRAL_STATE_DIR": empty.path, "CORRAL_CONFIG": ""])
            #expect(
                noConfig.stderr.hasPrefix("corral: no template named 'base'\nhint: templates come from corral.toml"))
            let serveMissing = try await runCorral(
                ["serve", "--config", harness.state.appendingPathComponent("none.toml").path],
                environment: harness.environment)
            #expect(serveMissing.status != 0)
            #expect(serveMissing.stderr.hasPrefix("corral: cannot read the configuration file"))
        } catch {
            await harness.cleanUp()
            throw error
        }
        await harness.cleanUp()
    }

    @Test(
        "a template naming a missing image or an unregistered runtime is refused at start, naming the template",
        arguments: [
            ("image = \"corral/missing:0\"", "template 'bad': image 'corral/missing:0' is not on the engine"),
            ("runtime = \"nope-runtime\"", "template 'bad': runtime 'nope-runtime' is not registered with the engine"),
        ])
    func refusedAtStart(line: String, message: String) async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-refuse-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: state) }
        let config = state.appendingPathComponent("corral.toml")
        try Data("[[templates]]\nname = \"bad\"\n\(line)\n[templates.pool]\nmin_idle = 1\n".utf8).write(to: config)
        let result = try await runCorral(
            ["serve", "--config", config.path],
            environment: ["CORRAL_STATE_DIR": state.path, "CORRAL_ENGINE": TestEnvironment.engineEndpoint])
        #expect(result.status != 0)
        #expect(result.stderr.hasPrefix("corral: \(message)"), "\(result.stderr)")
        #expect(result.stderr.contains("\nhint: "))
    }
}
