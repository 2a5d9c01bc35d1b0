import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

/// How commands reach the sandbox: corral-init's control connection, or the engine's exec
/// (what a process that did not make the sandbox uses).
enum CommandPath: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case control, engine
    var testDescription: String { rawValue }
}

/// A provisioner on the test engine, and sandboxes that are removed whatever the test does.
struct EngineFixture {
    let engine: DockerEngineClient
    let provisioner: Provisioner
    let path: CommandPath

    init(tools: ToolConfiguration = ToolConfiguration(), path: CommandPath = .control, logger: Logger? = nil) throws {
        self.path = path
        engine = try DockerEngineClient(parsing: TestEnvironment.engineEndpoint)
        // Records and the instance id live in a state directory of the sandbox tests' own.
        let sandboxes = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-sandbox-tests/sandboxes", isDirectory: true)
        var configuration = Provisioner.Configuration(
            environment: SandboxEnvironment(
                initBinary: try SandboxEnvironment.locateInit(), sandboxesDirectory: sandboxes))
        configuration.tools = tools
        configuration.controlConnections = path == .control
        provisioner = Provisioner(engine: engine, configuration: configuration, logger: logger)
    }

    static func request(_ configure: (inout ProvisionRequest) -> Void = { _ in }) -> ProvisionRequest {
        var request = ProvisionRequest(image: TestEnvironment.baseImage)
        request.labels["test"] = "corral-sandbox-tests"
        request.ttl = .seconds(900)
        request.resources.memory = .mebibytes(256)
        configure(&request)
        return request
    }

    /// Provisions a sandbox, runs `body`, and removes the sandbox afterwards.
    func withSandbox<T>(
        _ request: ProvisionRequest = EngineFixture.request(), _ body: (Sandbox) async throws -> T
    ) async throws -> T {
        let sandbox = try await provisioner.provision(request)
        // The path under test must be the one taken.
        #expect(provisioner.control?.isConnected(sandbox.id) == (path == .control ? true : nil))
        do {
            let value = try await body(sandbox)
            try? await sandbox.remove()
            return value
        } catch {
            try? await sandbox.remove()
            throw error
        }
    }

    func bash(_ sandbox: Sandbox, _ command: String, timeout: Double? = nil, extra: [String: JSONValue] = [:])
        async throws
        -> ToolOutput
    {
        var input: [String: JSONValue] = ["command": .string(command)]
        if let timeout { input["timeout"] = .double(timeout) }
        input.merge(extra) { _, new in new }
        return try await sandbox.execute(tool: "bash", input: .object(input))
    }
}

extension EngineFixture {
    /// Provisions a sandbox on `runtime` (runsc must be registered with the engine, as CI
    /// does), runs `body`, and removes it.
    func withSandbox<T>(
        on runtime: SandboxRuntime, _ configure: (inout ProvisionRequest) -> Void = { _ in },
        _ body: (Sandbox) async throws -> T
    ) async throws -> T {
        if runtime == .runsc {
            let info = try await engine.info()
            try #require(
                info.runtimes["runsc"] != nil,
                "the engine has no runsc runtime; register it as docs/engine.md shows (CI does)")
        }
        return try await withSandbox(
            EngineFixture.request {
                $0.runtime = runtime
                configure(&$0)
            }, body)
    }

    /// Another process's view of a sandbox, as after a restart: a provisioner of its own that
    /// adopts it and waits for corral-init to dial in to it.
    func adopter(of sandbox: Sandbox) async throws -> Provisioner {
        let next = try EngineFixture(path: .control).provisioner
        await next.listenControl(sandbox.id)
        let connected = await next.control?.waitForConnection(sandbox.id, timeout: .seconds(10))
        try #require(connected == true, "corral-init did not dial in to the adopting process")
        return next
    }
}

/// Output of a running command, collected by a task of its own.
final class OutputCollector: Sendable {
    private let state = Mutex<(bytes: [UInt8], error: String?, ended: Bool)>(([], nil, false))

    var text: String { String(decoding: state.withLock { $0.bytes }, as: UTF8.self) }
    var count: Int { state.withLock { $0.bytes.count } }
    var bytes: [UInt8] { state.withLock { $0.bytes } }
    var error: String? { state.withLock { $0.error } }
    var ended: Bool { state.withLock { $0.ended } }

    func append(_ chunk: [UInt8]) { state.withLock { $0.bytes += chunk } }
    func end(_ error: (any Error)?) {
        state.withLock {
            $0.ended = true
            $0.error = error.map { "\($0)" }
        }
    }

    /// Reads `command`'s output until it ends; returns the task doing it.
    static func reading(_ command: RunningCommand) -> (OutputCollector, Task<Void, Never>) {
        let collector = OutputCollector()
        let task = Task {
            do {
                for try await chunk in command.output { collector.append(chunk.bytes) }
                collector.end(nil)
            } catch {
                collector.end(error)
            }
        }
        return (collector, task)
    }

    /// Waits (polling, with a wide deadline) until `predicate` holds of the text so far.
    func waitFor(
        _ what: String, timeout: Duration = .seconds(60), _ predicate: @escaping @Sendable (String) -> Bool
    ) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while !predicate(text) {
            if ended && !predicate(text) {
                Issue.record("the output ended before \(what): \(text.suffix(500)) \(error ?? "")")
                throw CancellationError()
            }
            guard clock.now < deadline else {
                Issue.record("no \(what) within \(timeout): \(text.suffix(500))")
                throw CancellationError()
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// This process's resident memory, from /proc/self/statm.
func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return (fields.count > 1 ? Int(fields[1]) ?? 0 : 0) * sysconf(Int32(_SC_PAGESIZE))
}

/// Resident memory is the whole process's: measurements take turns, so that one test's
/// buffers never count against another's bound. The tests that measure (their functions are
/// named `memoryBound…`) run in a process of their own, after the others (see the Makefile).
actor MeasurementTurns {
    static let shared = MeasurementTurns()
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func begin() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func end() {
        if waiting.isEmpty { busy = false } else { waiting.removeFirst().resume() }
    }

    /// Runs `body` in this process's only measurement.
    static func alone<T>(_ body: () async throws -> T) async throws -> T {
        await shared.begin()
        do {
            let value = try await body()
            await shared.end()
            return value
        } catch {
            await shared.end()
            throw error
        }
    }
}

/// The largest resident size seen while `body` runs, measured alone (see `MeasurementTurns`).
func peakResidentGrowth<T>(during body: () async throws -> T) async throws -> (T, Int) {
    try await MeasurementTurns.alone { try await measurePeakResidentGrowth(during: body) }
}

private func measurePeakResidentGrowth<T>(during body: () async throws -> T) async throws -> (T, Int) {
    let before = residentBytes()
    let peak = Peak(before)
    let sampler = Task {
        while !Task.isCancelled {
            peak.see(residentBytes())
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
    defer { sampler.cancel() }
    let value = try await body()
    sampler.cancel()
    _ = await sampler.value
    peak.see(residentBytes())
    return (value, peak.value - before)
}
