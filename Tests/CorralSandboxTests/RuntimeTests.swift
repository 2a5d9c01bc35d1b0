import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import TestSupport
import Testing

@Suite("Runtimes and bad requests", .engine)
struct RuntimeTests {
    @Test("runsc sandboxes run commands when the engine has runsc registered")
    func runsc() async throws {
        let fixture = try EngineFixture()
        let info = try await fixture.engine.info()
        try #require(
            info.runtimes["runsc"] != nil,
            "the engine has no runsc runtime; register it as docs/engine.md shows (CI does)")
        try await fixture.withSandbox(EngineFixture.request { $0.runtime = .runsc }) { sandbox in
            let output = try await fixture.bash(
                sandbox, "id -u; echo x > /workspace/f && cat /workspace/f; dmesg 2>/dev/null | head -1")
            #expect(output.text.hasPrefix("\(SandboxUser(for: sandbox.id).uid)\nx\n"), "\(output.text)")
            let inspect = try await fixture.engine.inspectContainer(sandbox.containerName)
            #expect(inspect.hostConfig?.runtime == "runsc")
            let interfaces = try await fixture.bash(
                sandbox, "python3 -c 'import socket; print(sorted(n for _, n in socket.if_nameindex()))'")
            #expect(interfaces.text == "['lo']\n")
        }
    }

    @Test("an unknown image is refused with a hint, and nothing is left behind")
    func unknownImage() async throws {
        let fixture = try EngineFixture()
        let before = try await fixture.engine.listContainers(labels: ["corral.managed=1"]).count
        do {
            _ = try await fixture.provisioner.provision(EngineFixture.request { $0.image = "corral/missing:nope" })
            Issue.record("expected an error")
        } catch let error as CorralError {
            #expect(error.code == .notFound)
            #expect(error.message.contains("image 'corral/missing:nope' is not on the engine"))
        }
        let after = try await fixture.engine.listContainers(labels: [
            "corral.managed=1", "corral.label.test=unknown-image",
        ])
        #expect(after.isEmpty)
        _ = before
    }

    @Test("an unregistered runtime is refused with a hint")
    func unknownRuntime() async throws {
        let fixture = try EngineFixture()
        await #expect(throws: CorralError.self) {
            _ = try await fixture.provisioner.provision(
                EngineFixture.request { $0.runtime = SandboxRuntime(rawValue: "kata-nope") })
        }
        do {
            _ = try await fixture.provisioner.provision(
                EngineFixture.request { $0.runtime = SandboxRuntime(rawValue: "kata-nope") })
        } catch let error as CorralError {
            #expect(error.message.contains("kata-nope"))
            #expect(error.hint != nil)
        }
    }

    @Test("limits below what the engine accepts are refused before anything is made")
    func badLimits() async throws {
        let fixture = try EngineFixture()
        for configure in [
            { (r: inout ProvisionRequest) in r.resources.memory = ByteSize(bytes: 1024) },
            { (r: inout ProvisionRequest) in r.resources.cpus = 0 },
            { (r: inout ProvisionRequest) in r.resources.pids = 1 },
            { (r: inout ProvisionRequest) in r.labels["corral.evil"] = "x" },
        ] {
            do {
                _ = try await fixture.provisioner.provision(EngineFixture.request(configure))
                Issue.record("expected a refusal")
            } catch let error as CorralError {
                #expect(error.code == .invalidArgument)
            }
        }
    }

    @Test("a dead engine gives a clear error that names the socket")
    func deadEngine() async throws {
        let path = "/tmp/corral-no-engine-\(UUID().uuidString.prefix(6)).sock"
        let engine = try DockerEngineClient(parsing: "unix://\(path)")
        let provisioner = Provisioner(
            engine: engine, configuration: .init(environment: SandboxEnvironment(initBinary: "/bin/true")))
        do {
            _ = try await provisioner.provision(ProvisionRequest())
            Issue.record("expected an error")
        } catch let error as CorralError {
            #expect(error.code == .unavailable)
            #expect(error.description.contains(path))
            #expect(error.hint?.contains("start the engine") == true)
        }
    }
}
