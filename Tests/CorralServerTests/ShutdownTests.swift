import CorralAPI
import CorralCore
import CorralSandbox
import CorralSession
import CurlHTTP
import DockerEngine
import Foundation
import TestSupport
import Testing

/// corrald as a real process: started, asked to stop with SIGTERM in the middle of an agent
/// run, started again, and the run woken.
@Suite("corrald shuts down gracefully and resumes", .engine)
struct ShutdownTests {
    /// A brain script whose first tool call takes a while, so that SIGTERM lands mid-run.
    static let script = """
        {"text": "working", "tool_calls": [{"name": "bash", "input": {"command": "echo started >> /workspace/log; sleep 60; echo done >> /workspace/log"}}]}
        {"text": "checking", "tool_calls": [{"name": "bash", "input": {"command": "cat /workspace/log"}}]}
        {"text": "finished"}
        """

    @Test("SIGTERM mid-run drains and exits 0; after a restart the session wakes and completes")
    func shutdownAndWake() async throws {
        try await withTemporaryDirectory { directory in
            let script = directory.appendingPathComponent("brain.jsonl")
            try Data(Self.script.utf8).write(to: script)
            let state = directory.appendingPathComponent("state")
            do {
                try await run(script: script, state: state)
            } catch {
                await removeContainers(ofState: state)
                throw error
            }
            await removeContainers(ofState: state)
        }
    }

    func run(script: URL, state: URL) async throws {
        do {
            var service = try await Corrald.start(state: state)
            let client = try CorralClient(endpoint: .unixSocket(path: service.socket))
            defer { client.shutdown() }

            let started = try await client.post(
                "/v1/agents", #"{"task": "demo", "brain": "scripted:\#(script.path)", "maxTurns": 5}"#)
            let session = try #require(started["session"]?.stringValue)
            // Wait for the long tool call to be under way: its intent is durable before it runs.
            try await client.waitForEvent(session, type: "tool.intent")

            let status = try await service.stop()
            #expect(status == 0, "corrald exits cleanly on SIGTERM")
            #expect(service.output.contains("corral serve: stopped"))

            // The session is intact and resumable: an intent, no end.
            let store = FileSessionStore(directory: state.appendingPathComponent("sessions"))
            let id = try SessionID(validating: session)
            let events = try await store.readPage(id, from: 1, limit: 100).events.map(\.type)
            #expect(events.contains("tool.intent"))
            #expect(!events.contains("session.ended"))

            service = try await Corrald.start(state: state)
            let again = try CorralClient(endpoint: .unixSocket(path: service.socket))
            defer { again.shutdown() }
            _ = try await again.post("/v1/sessions/\(session)/harness/run", "{}")
            try await again.waitForEvent(session, type: "session.ended")
            let after = try await store.readPage(id, from: 1, limit: 200).events
            let results = after.filter { $0.type == "tool.result" }
            let intents = after.filter { $0.type == "tool.intent" }
            #expect(results.count == intents.count, "every intent got exactly one result")
            // The call cut short by the shutdown may have had effects: the wake says so.
            #expect(results.first?.data["status"]?.stringValue == "unknown", "\(results.first?.data ?? .null)")
            #expect(after.contains { $0.type == "harness.woke" && $0.epoch > 2 })
            #expect(after.last?.type == "session.ended")
            #expect(try await service.stop() == 0)
        }
    }

    /// A graceful stop leaves idle pool members for the next start to adopt, by design; the
    /// test's own are removed here, found by the state directory's instance label.
    func removeContainers(ofState state: URL) async {
        guard let engine = try? DockerEngineClient(parsing: TestEnvironment.engineEndpoint) else { return }
        defer { engine.shutdown() }
        let left = try? await Provisioner.removeEverything(
            engine: engine, sandboxesDirectory: state.appendingPathComponent("sandboxes"))
        #expect(left?.isEmpty != false, "left behind: \(left ?? [])")
    }
}

/// A corrald process with its own state directory. ChildProcess starts it with SIGTERM
/// unblocked (children would otherwise inherit the test runner's blocked SIGTERM, which would
/// make this test meaningless).
struct Corrald: Sendable {
    let process: ChildProcess
    let socket: String
    private let collected = OutputBox()
    private let exited = DispatchSemaphore(value: 0)

    init(state: URL) throws {
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        socket = state.appendingPathComponent("corral.sock").path
        var environment = ProcessInfo.processInfo.environment
        environment["CORRAL_ENGINE"] = TestEnvironment.engineEndpoint
        let pipe = try ChildProcess.makePipe()
        defer { close(pipe.write) }
        do {
            process = try ChildProcess.spawn(
                BuiltProducts.path("corrald"), ["--listen", "", "--state-dir", state.path], environment: environment,
                stdout: pipe.write, stderr: pipe.write)
        } catch {
            close(pipe.read)
            throw error
        }
        let (box, exited, process) = (collected, self.exited, process)
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while case let count = read(pipe.read, &buffer, buffer.count), count > 0 || (count < 0 && errno == EINTR) {
                if count > 0 { box.append(Data(buffer[0..<count])) }
            }
            close(pipe.read)
            box.finish()
        }
        Thread.detachNewThread {
            process.wait()
            exited.signal()
        }
        guard collected.wait(for: "listening on unix://", timeout: 60) else {
            process.signal(SIGKILL)
            throw CorralError(.unavailable, "corrald did not start: \(collected.text)")
        }
    }

    var output: String { collected.text }

    /// `init` on a thread of its own: it waits up to a minute for corrald to listen, which
    /// must not hold one of the few cooperative threads the other tests run on.
    static func start(state: URL) async throws -> Corrald {
        try await runOnThread { try Corrald(state: state) }
    }

    /// `terminate` on a thread of its own, for the same reason.
    func stop() async throws -> Int32 {
        let service = self
        return try await runOnThread { try service.terminate() }
    }

    /// Sends SIGTERM and waits for the exit status, and for the last of the output.
    func terminate() throws -> Int32 {
        process.signal(SIGTERM)
        guard exited.wait(timeout: .now() + 60) == .success else {
            process.signal(SIGKILL)
            throw CorralError(.timeout, "corrald did not stop within 60 s of SIGTERM")
        }
        collected.waitForEnd(timeout: 10)
        return process.wait().status
    }
}

/// A process's output as it arrives, with a wait for a piece of text.
final class OutputBox: @unchecked Sendable {
    private let condition = NSCondition()
    private var data = Data()
    private var done = false

    func append(_ more: Data) {
        condition.lock()
        data.append(more)
        condition.broadcast()
        condition.unlock()
    }

    func finish() {
        condition.lock()
        done = true
        condition.broadcast()
        condition.unlock()
    }

    var text: String {
        condition.lock()
        defer { condition.unlock() }
        return String(decoding: data, as: UTF8.self)
    }

    /// Waits until the output ends (or the timeout passes).
    func waitForEnd(timeout: TimeInterval) {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !done && condition.wait(until: deadline) {}
    }

    /// True once `needle` has arrived; false when the process ended or time ran out first.
    func wait(for needle: String, timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !String(decoding: data, as: UTF8.self).contains(needle) {
            if done || !condition.wait(until: deadline) {
                return String(decoding: data, as: UTF8.self).contains(needle)
            }
        }
        return true
    }
}

extension CorralClient {
    func post(_ path: String, _ json: String) async throws -> JSONValue {
        let response = try await send(
            request(.post, path, body: .bytes(Array(json.utf8)), contentType: "application/json"))
        guard (200..<300).contains(response.status) else {
            throw CorralError(.internalError, "POST \(path): HTTP \(response.status) \(response.bodyText)")
        }
        return try JSONDecoder().decode(JSONValue.self, from: Data(response.body))
    }

    /// Waits until the session has an event of `type`, following its live tail.
    func waitForEvent(_ session: String, type: String) async throws {
        let found = try await http.withStreamingResponse(
            request(.get, "/v1/sessions/\(session)/events/stream", timeout: .seconds(120))
        ) {
            _, body in
            var text = ""
            for try await chunk in body {
                text += String(decoding: chunk, as: UTF8.self)
                if text.contains("event: \(type)\n") { return true }
            }
            return false
        }
        guard found else { throw CorralError(.timeout, "no \(type) event in session \(session)") }
    }
}
