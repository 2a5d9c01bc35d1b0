import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import TestSupport
import Testing

@Suite("The state directory and sandboxes a dead process left half-made", .engine)
struct HostStateCLITests {
    // Security review finding 9: the state directory holds sessions, records and every
    // sandbox's sockets; it was 0755.
    @Test("the command line makes the state directory 0700, and tightens one an older corral left open")
    func stateDirectoryIsPrivate() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-state-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: root) }
        let fresh = root.appendingPathComponent("fresh")
        let old = root.appendingPathComponent("old")
        try FileManager.default.createDirectory(
            at: old, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        for state in [fresh, old] {
            let result = try await onOwnThread {
                try runCorralBlocking(
                    ["sandbox", "ls"],
                    environment: ["CORRAL_STATE_DIR": state.path, "CORRAL_ENGINE": TestEnvironment.engineEndpoint])
            }
            #expect(result.status == 0, "\(result.stderr)")
            var info = stat()
            try #require(stat(state.path, &info) == 0)
            #expect(
                info.st_mode & 0o777 == 0o700, "\(state.lastPathComponent) is \(String(info.st_mode & 0o777, radix: 8))"
            )
        }
    }

    // Low finding: after kill -9 during a cold create, the half-made sandbox showed up in lists
    // and counted against the quota for about 70 s.
    @Test("a sandbox whose maker was killed mid-create is in no list and is reaped at the next sweep")
    func killedMidCreate() async throws {
        let cli = try CLIHarness()
        defer { cli.cleanUp() }
        let config = cli.stateDirectory.appendingPathComponent("corral.toml")
        try Data(
            """
            [[templates]]
            name = "slow"
            image = "\(TestEnvironment.baseImage)"
            memory = "256m"
            setup = ["sleep 120"]

            """.utf8
        ).write(to: config)
        let maker = try RunningCorral(
            ["sandbox", "create", "--template", "slow", "--config", config.path, "--label", "test=\(cli.label)"],
            environment: ["CORRAL_STATE_DIR": cli.stateDirectory.path, "CORRAL_ENGINE": TestEnvironment.engineEndpoint])
        defer { maker.kill() }
        let engine = try DockerEngineClient(parsing: TestEnvironment.engineEndpoint)
        defer { engine.shutdown() }
        let store = SandboxRecordStore(directory: cli.stateDirectory.appendingPathComponent("sandboxes"))
        // Wait until the container runs its setup, then kill its maker.
        let deadline = ContinuousClock.now + .seconds(60)
        var made: [ContainerSummary] = []
        while made.isEmpty {
            try #require(ContinuousClock.now < deadline, "the sandbox was never created: \(maker.stderr)")
            if let instance = try? store.instanceID() {
                made = try await engine.listContainers(
                    all: true, labels: ["\(SandboxLabels.managed)=1", "\(SandboxLabels.instance)=\(instance)"])
            }
            if made.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
        }
        maker.kill()
        let listed = try await cli.corral(["sandbox", "ls", "--json"])
        #expect(listed.status == 0)
        let sandboxes = try JSONDecoder().decode([JSONValue].self, from: Data(listed.stdout.utf8))
        #expect(sandboxes.isEmpty, "listed: \(listed.stdout)")
        // The reaper takes it at once, well inside the claim grace (60 s).
        var configuration = Provisioner.Configuration(
            environment: SandboxEnvironment(
                initBinary: try SandboxEnvironment.locateInit(),
                sandboxesDirectory: cli.stateDirectory.appendingPathComponent("sandboxes")))
        configuration.controlConnections = false
        let provisioner = Provisioner(engine: engine, configuration: configuration)
        let sweep = try await SandboxReaper(provisioner: provisioner).sweep()
        #expect(Array(sweep.removed.values) == ["orphan"], "\(sweep.removed)")
        let left = try await engine.listContainers(
            all: true, labels: ["\(SandboxLabels.managed)=1", "\(SandboxLabels.instance)=\(try store.instanceID())"])
        #expect(left.isEmpty)
    }
}
