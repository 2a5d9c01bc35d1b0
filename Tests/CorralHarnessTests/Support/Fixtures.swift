import CorralCore
import CorralSandbox
import CorralSession
import DockerEngine
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

@testable import CorralHarness

/// A session store on real files in a temporary directory, and a harness on it whose
/// sandboxes are real ones on the test engine (made only if a test's brain calls for one).
struct HarnessFixture: Sendable {
    let directory: URL
    let store: FileSessionStore
    let hands: SandboxHands
    let sleeps = SleepRecorder()

    init(directory: URL) {
        self.directory = directory
        self.store = FileSessionStore(directory: directory.appendingPathComponent("sessions", isDirectory: true))
        // The same state directory as the `corral agent` processes the crash tests start: one
        // instance label, so that whatever any of them made is found and removed afterwards.
        self.hands = SandboxHands(
            configuration: Self.handsConfiguration, provisioner: { try Self.provisioner(state: directory) })
    }

    static var handsConfiguration: SandboxHands.Configuration {
        var configuration = SandboxHands.Configuration()
        configuration.image = TestEnvironment.baseImage
        configuration.ttl = .seconds(900)
        configuration.resources.memory = .mebibytes(256)
        configuration.labels = ["test": "corral-harness-tests"]
        return configuration
    }

    static func provisioner(state: URL? = nil) throws -> Provisioner {
        let engine = try DockerEngineClient(parsing: TestEnvironment.engineEndpoint)
        return Provisioner(
            engine: engine,
            configuration: .init(
                environment: SandboxEnvironment(
                    initBinary: try SandboxEnvironment.locateInit(),
                    sandboxesDirectory: state?.appendingPathComponent("sandboxes", isDirectory: true))))
    }

    func harness(_ configure: (inout Harness.Configuration) -> Void = { _ in }) -> Harness {
        var configuration = Harness.Configuration()
        configuration.retry.initialDelay = .milliseconds(1)
        let sleeps = self.sleeps
        configuration.sleep = { sleeps.record($0) }
        configure(&configuration)
        var logger = Logger(label: "corral.harness.test")
        logger.logLevel = .warning
        return Harness(store: store, hands: hands, configuration: configuration, logger: logger)
    }

    func events(_ session: SessionID) async throws -> [Event] {
        var all: [Event] = []
        for try await event in store.read(session) { all.append(event) }
        return all
    }

    /// Runs `body` with a fixture in a fresh directory; afterwards, whatever happened, removes
    /// every sandbox any session of the fixture made.
    static func with<T>(_ body: (HarnessFixture) async throws -> T) async throws -> T {
        try await withTemporaryDirectory { directory in
            let fixture = HarnessFixture(directory: directory)
            do {
                let value = try await body(fixture)
                await fixture.removeAllSandboxes()
                return value
            } catch {
                await fixture.removeAllSandboxes()
                throw error
            }
        }
    }

    /// Removes whatever this fixture's state directory made: in-process hands and the
    /// `corral agent` processes the crash tests start share it (and so its instance label),
    /// and a process killed while provisioning leaves a sandbox without a record.
    func removeAllSandboxes() async {
        guard let engine = try? DockerEngineClient(parsing: TestEnvironment.engineEndpoint) else { return }
        defer { engine.shutdown() }
        let left = try? await Provisioner.removeEverything(
            engine: engine, sandboxesDirectory: directory.appendingPathComponent("sandboxes", isDirectory: true))
        #expect(left?.isEmpty != false, "left behind: \(left ?? [])")
    }
}

/// Records the waits a harness asked for, instead of waiting.
final class SleepRecorder: Sendable {
    private let waits = Mutex<[Duration]>([])
    var recorded: [Duration] { waits.withLock { $0 } }
    func record(_ duration: Duration) { waits.withLock { $0.append(duration) } }
}

/// Wraps a brain and checks every request it is given, encoded for both providers, against
/// the documented shapes. In-process tests use it so that a malformed transcript fails them
/// even without an HTTP server in between.
final class CheckedBrain: Brain {
    let inner: any Brain
    private let state = Mutex<(problems: [String], requests: [BrainRequest])>(([], []))

    init(_ inner: any Brain) { self.inner = inner }

    var spec: BrainSpec { inner.spec }
    var problems: [String] { state.withLock { $0.problems } }
    var requests: [BrainRequest] { state.withLock { $0.requests } }

    func respond(to request: BrainRequest) async throws -> BrainResponse {
        var problems: [String] = []
        if let anthropic = (try? JSONCodec.decode(AnthropicBrain.encode(request, model: "m")))?.objectValue {
            problems += AnthropicShape.problems(anthropic).map { "anthropic: \($0)" }
        }
        if let openai = (try? JSONCodec.decode(OpenAIBrain.encode(request, model: "m", maxTokensField: "max_tokens")))?
            .objectValue
        {
            problems += OpenAIShape.problems(openai).map { "openai: \($0)" }
        }
        state.withLock {
            $0.problems += problems.map { "turn \(request.turn): \($0)" }
            $0.requests.append(request)
        }
        return try await inner.respond(to: request)
    }
}

/// A brain whose answers a closure gives, turn by turn.
struct ClosureBrain: Brain {
    let spec = BrainSpec(provider: .scripted, model: "closure")
    let answer: @Sendable (BrainRequest) async throws -> BrainResponse

    func respond(to request: BrainRequest) async throws -> BrainResponse { try await answer(request) }

    static func calls(_ calls: [(String, JSONValue)], text: String? = nil, turn: Int) -> BrainResponse {
        var content: [ContentBlock] = text.map { [.text($0)] } ?? []
        content += calls.enumerated().map {
            .toolUse(ToolUse(id: "toolu_\(turn)_\($0.offset + 1)", name: $0.element.0, input: $0.element.1))
        }
        return BrainResponse(content: content, stopReason: calls.isEmpty ? "end_turn" : "tool_use", model: "closure")
    }
}

extension Array where Element == Event {
    func ofType(_ type: String) -> [Event] { filter { $0.type == type } }
}

/// Every tool.intent has exactly one tool.result with the same turn and index, after it.
func checkIntentsAnswered(_ events: [Event]) {
    var intents: [String: UInt64] = [:]
    var results: [String: [UInt64]] = [:]
    for event in events {
        let key = "\(event.data["turn"]?.intValue ?? -1).\(event.data["index"]?.intValue ?? -1)"
        if event.type == HarnessEvent.toolIntent { intents[key] = event.seq }
        if event.type == HarnessEvent.toolResult { results[key, default: []].append(event.seq) }
    }
    for (key, seqs) in results {
        #expect(seqs.count == 1, "call \(key) has \(seqs.count) results")
        if let intent = intents[key], let result = seqs.first {
            #expect(intent < result, "call \(key): result before intent")
        }
    }
    for key in intents.keys { #expect(results[key] != nil, "call \(key) has an intent and no result") }
}
