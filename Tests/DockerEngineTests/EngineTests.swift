import CorralCore
import CurlHTTP
import DockerEngine
import Foundation
import TarArchive
import TestSupport
import Testing

@Suite("The engine API on a real engine", .engine)
struct EngineTests {
    let engine: DockerEngineClient

    init() throws {
        engine = try DockerEngineClient(parsing: TestEnvironment.engineEndpoint)
    }

    @Test("ping, version and info answer, and the API version is within corral's range")
    func system() async throws {
        #expect(try await engine.ping())
        let version = try await engine.apiVersion()
        #expect(version >= APIVersion.oldestSupported && version <= APIVersion.newestSupported)
        let info = try await engine.info()
        #expect(info.runtimes["runc"] != nil)
    }

    /// corral-init must run in any image: here, one whose root holds nothing but it.
    @Test("a rootfs holding only the static corral-init imports and runs it as PID 1")
    func initOnlyImage() async throws {
        let initPath = BuiltProducts.path("corral-init")
        let tag = "t\(UUID().uuidString.prefix(8).lowercased())"
        let writer = try TarWriter()
        try writer.addDirectory(path: "sbin")
        try writer.addFile(path: "sbin/init", from: URL(fileURLWithPath: initPath), mode: 0o755)
        let rootfs = try writer.finish()
        try await engine.importImage(
            rootfs: .bytes(rootfs), repository: "corral/init-only", tag: tag, changes: ["ENTRYPOINT [\"/sbin/init\"]"])
        let image = "corral/init-only:\(tag)"
        var spec = ContainerCreateRequest(image: image)
        spec.user = "1000:1000"
        spec.labels = ["corral.managed": "1", "corral.test": "init-only"]
        spec.hostConfig.networkMode = "none"
        let id = try await engine.createContainer(name: nil, spec)
        do {
            try await engine.startContainer(id)
            let exec = try await engine.createExec(container: id, ExecCreateRequest(cmd: ["/sbin/init", "version"]))
            let output = try await engine.withExecOutput(exec) { stream in
                var text = ""
                for try await (_, bytes) in stream { text += String(decoding: bytes, as: UTF8.self) }
                return text
            }
            #expect(output.hasPrefix("corral-init "))
            let inspect = try await engine.inspectContainer(id)
            #expect(inspect.state.running)
            try await engine.stopContainer(id, timeoutSeconds: 5)
            let stopped = try await engine.inspectContainer(id)
            #expect(stopped.state.exitCode == 0, "corral-init exits cleanly on SIGTERM")
        } catch {
            _ = try? await engine.removeContainer(id)
            try? await engine.removeImage(image, force: true)
            throw error
        }
        try await engine.removeContainer(id)
        try await engine.removeImage(image, force: true)
        #expect(try await engine.inspectImage(image) == nil)
    }

    @Test("the events stream reports a labelled container's create and destroy")
    func events() async throws {
        let marker = "events-\(UUID().uuidString.prefix(8).lowercased())"
        let since = Date().addingTimeInterval(-1)
        var spec = ContainerCreateRequest(image: TestEnvironment.baseImage)
        spec.labels = ["corral.managed": "1", "corral.test": marker]
        spec.cmd = ["true"]
        let id = try await engine.createContainer(name: nil, spec)
        try await engine.removeContainer(id)
        let actions = try await engine.withEvents(
            filters: ["type": ["container"], "label": ["corral.test=\(marker)"]], since: since
        ) { events in
            var seen: [String] = []
            for try await event in events {
                #expect(event.actor.id == id)
                seen.append(event.action)
                if event.action == "destroy" { break }
            }
            return seen
        }
        #expect(actions.first == "create")
        #expect(actions.last == "destroy")
    }

    @Test("rename is a compare-and-swap: the second claimer of a name is refused")
    func renameConflict() async throws {
        var spec = ContainerCreateRequest(image: TestEnvironment.baseImage)
        spec.labels = ["corral.managed": "1", "corral.test": "rename"]
        spec.cmd = ["true"]
        let first = try await engine.createContainer(name: nil, spec)
        let second = try await engine.createContainer(name: nil, spec)
        let name = "corral-test-rename-\(UUID().uuidString.prefix(8).lowercased())"
        try await engine.renameContainer(first, to: name)
        do {
            try await engine.renameContainer(second, to: name)
            Issue.record("two containers took the same name")
        } catch let error as DockerEngineError {
            #expect(error.isConflict)
        }
        _ = try await engine.removeContainer(first)
        _ = try await engine.removeContainer(second)
    }
}
