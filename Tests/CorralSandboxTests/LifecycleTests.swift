import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import TestSupport
import Testing

@Suite("Sandbox lifecycle on a real engine", .engine)
struct LifecycleTests {
    @Test("provision, run, inspect, remove: the container is gone afterwards")
    func lifecycle() async throws {
        let fixture = try EngineFixture()
        let sandbox = try await fixture.provisioner.provision(
            EngineFixture.request { $0.labels["purpose"] = "lifecycle" })
        let info = try await sandbox.info()
        #expect(info.state == "running")
        #expect(info.id == sandbox.id)
        #expect(info.labels["purpose"] == "lifecycle")
        #expect(info.expires != nil)
        #expect(sandbox.provisioning?.path == .cold)
        // The engine's limits, as a worker's page shows them; no exit while it runs.
        #expect(info.limits == SandboxLimits(memoryBytes: 256 << 20, cpus: 1, pids: 256))
        #expect(info.exit == nil)

        let output = try await fixture.bash(sandbox, "echo hello; echo oops >&2; exit 3")
        #expect(output.isError)
        #expect(output.status?.exitCode == 3)
        #expect(output.text.contains("hello"))
        #expect(output.text.contains("[stderr]\noops"))
        #expect(output.text.contains("[exit status 3]"))

        let listed = try await fixture.provisioner.list(tenant: .local)
        #expect(listed.contains { $0.id == sandbox.id })

        try await sandbox.remove()
        await #expect(throws: CorralError.self) { try await sandbox.info() }
        let leftovers = try await fixture.engine.listContainers(labels: ["corral.sandbox=\(sandbox.id)"])
        #expect(leftovers.isEmpty)
    }
}
