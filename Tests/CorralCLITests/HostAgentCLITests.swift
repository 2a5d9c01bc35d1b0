import CorralCore
import Foundation
import TestSupport
import Testing

/// The host agent the command line starts on demand when no service runs (see
/// Sources/CorralCLI/Backend/HostAgent.swift).
@Suite("The host agent, started on demand", .engine)
struct HostAgentCLITests {
    struct Agent {
        let state: URL
        let label = "agenttest-\(UUID().uuidString.prefix(8).lowercased())"

        init() throws {
            state = FileManager.default.temporaryDirectory.appendingPathComponent(
                "corral-agent-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        }

        func corral(_ arguments: [String], idle: String = "30s", agent: String = "1") async throws -> ProcessResult {
            let environment = [
                "CORRAL_STATE_DIR": state.path, "CORRAL_ENGINE": TestEnvironment.engineEndpoint,
                "CORRAL_AGENT": agent, "CORRAL_AGENT_IDLE": idle, "CORRAL_CONFIG": "",
            ]
            return try await onOwnThread { try runCorralBlocking(arguments, environment: environment) }
        }

        var socket: String { state.appendingPathComponent("corral.sock").path }

        /// Agent processes serving this state directory, by pid.
        func processes() throws -> [Int32] {
            try FileManager.default.contentsOfDirectory(atPath: "/proc").compactMap(Int32.init).filter { pid in
                guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
                let words = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
                return words.contains("--agent") && words.contains(state.path)
            }
        }

        /// Waits (up to `seconds`) until no agent serves the state directory.
        func waitForNoAgent(seconds: Double) async throws -> Bool {
            let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
            while ContinuousClock.now < deadline {
                if try processes().isEmpty { return true }
                try await Task.sleep(for: .milliseconds(100))
            }
            return try processes().isEmpty
        }

        func cleanUp() async {
            if let listed = try? await corral(["sandbox", "ls", "--json"]),
                let sandboxes = try? JSONDecoder().decode([JSONValue].self, from: Data(listed.stdout.utf8))
            {
                let ids = sandboxes.compactMap { $0["id"]?.stringValue }
                if !ids.isEmpty { _ = try? await corral(["sandbox", "rm"] + ids) }
            }
            try? FileManager.default.removeItem(at: state)
            _ = try? await waitForNoAgent(seconds: 10)
        }
    }

    @Test("without a service, the first sandbox command starts an agent, and later commands use it")
    func startsOnDemand() async throws {
        let agent = try Agent()
        do {
            #expect(!UnixSocketPath.accepts(agent.socket))
            let created = try await agent.corral(["sandbox", "create", "--label", "test=\(agent.label)", "--json"])
            #expect(created.status == 0, "\(created.stderr)")
            let id = try #require(
                try JSONDecoder().decode(JSONValue.self, from: Data(created.stdout.utf8))["id"]?.stringValue)
            #expect(UnixSocketPath.accepts(agent.socket), "no agent answers after the first command")
            let first = try agent.processes()
            #expect(first.count == 1)

            let exec = try await agent.corral(["exec", id, "--", "sh", "-c", "echo hi; id -un"])
            #expect(exec.status == 0 && exec.stdout == "hi\nagent\n", "\(exec.stderr)")
            let status = try await agent.corral(["exec", id, "--", "sh", "-c", "exit 3"])
            #expect(status.status == 3)
            #expect(try agent.processes() == first, "a later command started another agent")
            let removed = try await agent.corral(["sandbox", "rm", id])
            #expect(removed.status == 0, "\(removed.stderr)")
        } catch {
            await agent.cleanUp()
            throw error
        }
        await agent.cleanUp()
    }

    @Test("commands started at once share one agent")
    func sharedAgent() async throws {
        let agent = try Agent()
        let results = try await withThrowingTaskGroup(of: ProcessResult.self) { group in
            for _ in 0..<4 { group.addTask { try await agent.corral(["sandbox", "ls"]) } }
            var all: [ProcessResult] = []
            for try await result in group { all.append(result) }
            return all
        }
        #expect(results.allSatisfy { $0.status == 0 }, "\(results.map(\.stderr))")
        // An agent started by a command that lost the race finds the state directory taken and
        // exits; give it a moment to go, then one agent serves them all.
        let deadline = ContinuousClock.now + .seconds(10)
        while try agent.processes().count > 1, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(try agent.processes().count == 1)
        await agent.cleanUp()
    }

    @Test("an idle agent stops by itself, and so does one whose state directory is removed")
    func stops() async throws {
        let agent = try Agent()
        #expect(try await agent.corral(["sandbox", "ls"], idle: "1s").status == 0)
        #expect(try await agent.waitForNoAgent(seconds: 30), "the idle agent still runs")
        #expect(!UnixSocketPath.accepts(agent.socket))
        // Started again, with a long idle time: removing the state directory ends it.
        #expect(try await agent.corral(["sandbox", "ls"], idle: "10m").status == 0)
        #expect(try agent.processes().count == 1)
        try FileManager.default.removeItem(at: agent.state)
        #expect(try await agent.waitForNoAgent(seconds: 30), "the agent outlived its state directory")
    }

    @Test("with CORRAL_AGENT=0, or a --config of the command's own, commands drive the engine themselves")
    func optOut() async throws {
        let agent = try Agent()
        #expect(try await agent.corral(["sandbox", "ls"], agent: "0").status == 0)
        let config = agent.state.appendingPathComponent("own.toml")
        try Data("# no templates\n".utf8).write(to: config)
        let run = try await agent.corral(
            ["run", "--config", config.path, "--label", "test=\(agent.label)", "--", "true"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(!UnixSocketPath.accepts(agent.socket))
        #expect(try agent.processes().isEmpty)
        await agent.cleanUp()
    }
}
