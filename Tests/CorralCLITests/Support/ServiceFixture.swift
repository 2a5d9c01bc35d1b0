import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import TestSupport
import Testing

/// Runs blocking work (waiting on a child's output) on a thread of its own, so that the
/// test does not hold one of Swift's few cooperative threads meanwhile.
@discardableResult
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

struct WaitFailure: Error, CustomStringConvertible {
    var description: String
}

/// A `corral` subprocess whose output a test reads while it runs.
final class RunningCorral: @unchecked Sendable {
    // @unchecked: the buffers are guarded by `condition`.
    let process: ChildProcess
    private let condition = NSCondition()
    private var stdoutBytes: [UInt8] = []
    private var stderrBytes: [UInt8] = []
    private var openPipes = 2

    init(_ arguments: [String], environment: [String: String]) throws {
        let out = try ChildProcess.makePipe()
        let err = try ChildProcess.makePipe()
        defer {
            close(out.write)
            close(err.write)
        }
        process = try ChildProcess.spawn(
            BuiltProducts.path("corral"), arguments, environment: commandEnvironment(environment), stdout: out.write,
            stderr: err.write)
        drain(out.read, stdout: true)
        drain(err.read, stdout: false)
    }

    private func drain(_ fd: Int32, stdout: Bool) {
        Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                var count = read(fd, &buffer, buffer.count)
                if count < 0 && errno == EINTR { continue }
                count = max(count, 0)
                let data = buffer[0..<count]
                if data.isEmpty { close(fd) }
                condition.lock()
                if data.isEmpty {
                    openPipes -= 1
                } else if stdout {
                    stdoutBytes.append(contentsOf: data)
                } else {
                    stderrBytes.append(contentsOf: data)
                }
                condition.broadcast()
                condition.unlock()
                if data.isEmpty { return }
            }
        }.start()
    }

    var stdout: String { condition.withLock { String(decoding: stdoutBytes, as: UTF8.self) } }
    var stderr: String { condition.withLock { String(decoding: stderrBytes, as: UTF8.self) } }

    /// Complete stdout lines so far.
    var lines: [String] {
        let text = stdout
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        lines.removeLast()  // what follows the last newline: empty, or a line still being written
        return lines
    }

    /// Blocks until a complete stdout line matches, the output ends, or the timeout passes.
    @discardableResult
    func waitForLine(_ what: String, timeout: TimeInterval = 120, _ match: (String) -> Bool) throws -> String {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            let text = String(decoding: stdoutBytes, as: UTF8.self)
            var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            lines.removeLast()
            if let line = lines.first(where: { match(String($0)) }) { return String(line) }
            if openPipes == 0 || !condition.wait(until: deadline) {
                throw WaitFailure(
                    description:
                        "no line \(what) (\(openPipes == 0 ? "output ended" : "timed out")); stdout: \(text.suffix(2000)); stderr: \(String(decoding: stderrBytes, as: UTF8.self).suffix(2000))"
                )
            }
        }
    }

    /// Blocks until the process has exited and closed its output.
    func waitForExit(timeout: TimeInterval = 120) throws -> (status: Int32, stdout: String, stderr: String) {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        while openPipes > 0 {
            guard condition.wait(until: deadline) else {
                condition.unlock()
                throw WaitFailure(description: "the process did not end; stdout: \(stdout.suffix(2000))")
            }
        }
        condition.unlock()
        return (process.wait().status, stdout, stderr)
    }

    /// SIGKILL: a client that goes away is what the tests mean.
    func kill() {
        process.signal(SIGKILL)
        process.wait()
    }
}

/// `corral serve` on a state directory of its own: TCP on a free loopback port, with tenant
/// tokens, and `$STATE/corral.sock` for the local command line. No warm pools; the sandboxes
/// agents make are removed at the end, found by the instance label of the state directory.
final class ServiceFixture: @unchecked Sendable {
    // @unchecked: driven by one test at a time.
    let state: URL
    /// A state directory with no service, for the embedded side of comparisons.
    let embeddedState: URL
    /// What clients that name the service with --server use as their own state directory:
    /// no socket there, so nothing is found by accident.
    let clientState: URL
    private(set) var url = ""
    private var server: RunningCorral?

    /// A fixture for `body`, cleaned up after it however it ends.
    static func with(_ body: (ServiceFixture) async throws -> Void) async throws {
        let service = try ServiceFixture()
        do {
            try await body(service)
        } catch {
            await service.cleanUp()
            throw error
        }
        await service.cleanUp()
    }

    init() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-remote-\(UUID().uuidString.prefix(8).lowercased())")
        state = root.appendingPathComponent("service")
        embeddedState = root.appendingPathComponent("embedded")
        clientState = root.appendingPathComponent("client")
        for directory in [state, embeddedState, clientState] {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        }
        try Data("# no templates: no warm pools\n".utf8).write(to: state.appendingPathComponent("corral.toml"))
    }

    var serviceEnvironment: [String: String] {
        [
            "CORRAL_STATE_DIR": state.path, "CORRAL_ENGINE": TestEnvironment.engineEndpoint,
            "CORRAL_CONFIG": state.appendingPathComponent("corral.toml").path, "CORRAL_LOG": "error",
            "CORRAL_SERVER": "", "CORRAL_TOKEN": "", "ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": "",
        ]
    }

    /// What the service has written to stderr (its log).
    var serviceLog: String { server?.stderr ?? "" }

    /// Starts the service and waits until both its listeners answer.
    func start(environment extra: [String: String] = [:]) async throws {
        let server = try RunningCorral(
            ["serve", "--listen", "127.0.0.1:0", "--state-dir", state.path],
            environment: serviceEnvironment.merging(extra) { _, new in new })
        self.server = server
        let line = try await onOwnThread {
            try server.waitForLine("saying it listens on TCP", timeout: 120) {
                $0.hasPrefix("corral serve: listening on http://")
            }
        }
        try await onOwnThread {
            try server.waitForLine("saying it listens on the socket", timeout: 120) {
                $0.hasPrefix("corral serve: listening on unix://")
            }
        }
        url = String(line.dropFirst("corral serve: listening on ".count))
    }

    /// SIGKILL, as a crash would.
    func kill() {
        server?.kill()
        server = nil
    }

    /// A new tenant's token.
    func token(for tenant: String) async throws -> String {
        let environment = serviceEnvironment
        let result = try await onOwnThread {
            try runCorralBlocking(["tenant", "add", tenant], environment: environment)
        }
        guard result.status == 0 else { throw WaitFailure(description: "tenant add failed: \(result.stderr)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `corral --server URL …` with a tenant's token.
    func remote(_ arguments: [String], token: String?, stdin: String? = nil) async throws -> ProcessResult {
        let environment = clientEnvironment(state: clientState, token: token)
        let url = self.url
        return try await onOwnThread {
            try runCorralBlocking(
                ["--server", url] + arguments, environment: environment, stdin: stdin.map { Data($0.utf8) })
        }
    }

    /// `corral …` on the service's own state directory: the service is found by its socket.
    func local(_ arguments: [String], stdin: String? = nil) async throws -> ProcessResult {
        let environment = clientEnvironment(state: state, token: nil)
        return try await onOwnThread {
            try runCorralBlocking(arguments, environment: environment, stdin: stdin.map { Data($0.utf8) })
        }
    }

    /// `corral …` on a state directory no service uses.
    func embedded(_ arguments: [String], stdin: String? = nil) async throws -> ProcessResult {
        let environment = clientEnvironment(state: embeddedState, token: nil)
        return try await onOwnThread {
            try runCorralBlocking(arguments, environment: environment, stdin: stdin.map { Data($0.utf8) })
        }
    }

    /// A long-running `corral …` (tail, an agent's run) against the service.
    func background(_ arguments: [String], token: String?) throws -> RunningCorral {
        try RunningCorral(
            ["--server", url] + arguments, environment: clientEnvironment(state: clientState, token: token))
    }

    /// A long-running `corral …` on the service's state directory (found by its socket).
    func localBackground(_ arguments: [String]) throws -> RunningCorral {
        try RunningCorral(arguments, environment: clientEnvironment(state: state, token: nil))
    }

    func clientEnvironment(state: URL, token: String?) -> [String: String] {
        [
            "CORRAL_STATE_DIR": state.path, "CORRAL_ENGINE": TestEnvironment.engineEndpoint, "CORRAL_LOG": "error",
            "CORRAL_SERVER": "", "CORRAL_TOKEN": token ?? "", "CORRAL_CONFIG": "", "ANTHROPIC_API_KEY": "",
            "OPENAI_API_KEY": "",
        ]
    }

    /// Kills the service, removes every container of its instance (and checks that none is
    /// left), and removes the directories.
    func cleanUp() async {
        kill()
        do {
            let engine = try DockerEngineClient(parsing: TestEnvironment.engineEndpoint)
            defer { engine.shutdown() }
            for directory in [state, embeddedState] {
                let left = try await Provisioner.removeEverything(
                    engine: engine, sandboxesDirectory: directory.appendingPathComponent("sandboxes"))
                #expect(left.isEmpty, "left behind: \(left)")
            }
        } catch {
            Issue.record("cleaning up the service's sandboxes failed: \(error)")
        }
        try? FileManager.default.removeItem(at: state.deletingLastPathComponent())
    }
}
