import CorralAPI
import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import TestSupport
import Testing

/// Security review finding 6: after a refused upload hung, SIGTERM no longer stopped corrald.
/// corrald as a real process on its unix socket.
@Suite("SIGTERM always stops corrald", .engine, .timeLimit(.minutes(5)))
struct StopTests {
    // Security review finding 6: a stop must complete whatever the clients do: a refused
    // 10 MB upload, a command that would run for 1000 s, a client that never finishes its head.
    @Test("SIGTERM with a refused upload, a never-ending exec and a half-sent head still exits 0 promptly")
    func stopsWhateverClientsDo() async throws {
        try await withTemporaryDirectory { directory in
            let state = directory.appendingPathComponent("state")
            try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
            try Data("[server]\nshutdown_timeout = \"3s\"\n".utf8).write(
                to: state.appendingPathComponent("corral.toml"))
            do {
                try await run(state: state)
            } catch {
                await removeContainers(ofState: state)
                throw error
            }
            await removeContainers(ofState: state)
        }
    }

    func run(state: URL) async throws {
        let service = try Corrald(state: state)
        let socket = service.socket
        let sandbox = try await runOnThread { () -> String in
            let connection = try RawConnection(unixPath: socket)
            connection.send(
                "POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
            )
            let created = try #require(connection.readResponse(timeout: 60))
            return try #require(try JSONDecoder().decode(JSONValue.self, from: Data(created.body))["id"]?.stringValue)
        }
        // The upload that used to hang, its path refused before a byte is read: answered at once now.
        let upload = try RawConnection(unixPath: socket)
        let body = [UInt8](repeating: 0x41, count: 10 << 20)
        let head =
            "PUT /v1/sandboxes/\(sandbox)/archive?path=relative HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.count)\r\n\r\n"
        Thread { _ = upload.send(Array(head.utf8) + body) }.start()
        let refused = try await runOnThread { upload.readResponse(timeout: 30) }
        #expect(refused?.status == 400, "\(refused?.text ?? "no answer")")
        // A command with no end, its client still waiting.
        let exec = try RawConnection(unixPath: socket)
        let json = #"{"command": ["sleep", "1000"]}"#
        _ = try await runOnThread {
            exec.send(
                "POST /v1/sandboxes/\(sandbox)/exec HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(json.utf8.count)\r\n\r\n\(json)"
            )
        }
        try await Task.sleep(for: .seconds(1))
        // A client that has sent half a head.
        let half = try RawConnection(unixPath: socket)
        _ = try await runOnThread { half.send("GET /v1/health HTTP/1.1\r\n") }

        let stopping = ContinuousClock.now
        let status = try service.terminate()
        #expect(status == 0, "\(service.output)")
        #expect(service.output.contains("corral serve: stopped"), "\(service.output)")
        #expect(ContinuousClock.now - stopping < .seconds(30), "the stop took \(ContinuousClock.now - stopping)")
        // The exec's client saw its stream end rather than hang.
        #expect(try await runOnThread { exec.isClosed(within: 5) })
    }

    func removeContainers(ofState state: URL) async {
        guard let engine = try? DockerEngineClient(parsing: TestEnvironment.engineEndpoint) else { return }
        defer { engine.shutdown() }
        _ = try? await Provisioner.removeEverything(
            engine: engine, sandboxesDirectory: state.appendingPathComponent("sandboxes"))
    }
}
