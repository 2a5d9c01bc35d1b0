import CorralCore
import CorralGateway
import CorralSandbox
import CorralSession
import DockerEngine
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

@testable import CorralService

/// The service as `corral serve` builds it (gateway, vault, pools, reaper, session events), on
/// a state directory of the test's own, beside a real git smart-HTTP upstream on loopback that
/// demands a token. The token is in the vault and nowhere else; every log line corral writes
/// is captured so that tests can search them.
final class WorkspaceFixture: Sendable {
    let directory: URL
    let state: URL
    let upstream: GitHTTPServer
    let token: String
    let logs: LogCapture
    let sessions: FileSessionStore
    let vault: Vault
    let engine: DockerEngineClient
    let clock: ManualClock
    let templates: [SandboxTemplate]
    let reapInterval: Duration
    /// corral.toml's `[gateway]`, made once the upstream's port is known.
    let gatewaySettings: @Sendable (_ upstreamPort: Int) throws -> CorralConfiguration.GatewaySettings
    private let running = Mutex<(runner: CorralServiceRunner, task: Task<Void, any Error>)?>(nil)

    static let owner = "acme"
    static let credentialName = "upstream-token"

    private init(
        templates: [SandboxTemplate], reapInterval: Duration,
        gateway: @escaping @Sendable (Int) throws -> CorralConfiguration.GatewaySettings
    ) async throws {
        // Short: a sandbox's socket path must stay under 108 bytes.
        directory = URL(fileURLWithPath: "/tmp/cw-\(UUID().uuidString.prefix(8).lowercased())", isDirectory: true)
        state = directory.appendingPathComponent("state", isDirectory: true)
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        token = "tok_\(UUID().uuidString)"
        upstream = try GitHTTPServer(root: directory.appendingPathComponent("upstream"), tokens: [token])
        logs = LogCapture()
        sessions = FileSessionStore(directory: state.appendingPathComponent("sessions", isDirectory: true))
        vault = try await Vault(configuration: Vault.Configuration(stateDirectory: state, environment: [:]))
        engine = try DockerEngineClient(parsing: TestEnvironment.engineEndpoint)
        clock = ManualClock()
        self.templates = templates
        self.reapInterval = reapInterval
        self.gatewaySettings = gateway
    }

    /// Runs `body` with a fresh fixture and the service running; afterwards removes every
    /// container of the state directory's instance (checked by label) and checks that the
    /// token is in no log line corral wrote. The service's timers run on `clock`, so its
    /// reaper sweeps once at start and then only when the clock is moved past `reapInterval`.
    static func with(
        templates: [SandboxTemplate] = [], reapInterval: Duration = .seconds(30),
        gateway: @escaping @Sendable (_ upstreamPort: Int) throws -> CorralConfiguration.GatewaySettings = { _ in
            CorralConfiguration.GatewaySettings()
        },
        _ body: (WorkspaceFixture) async throws -> Void
    ) async throws {
        let fixture = try await WorkspaceFixture(templates: templates, reapInterval: reapInterval, gateway: gateway)
        do {
            try fixture.upstream.createRepository(owner: owner, name: "rocket", files: ["README.md": "rocket\n"])
            try await fixture.storeToken()
            try await fixture.start()
            try await body(fixture)
        } catch {
            await fixture.tearDown()
            throw error
        }
        await fixture.tearDown()
        fixture.expectNoToken(in: fixture.logs.all.joined(separator: "\n"), "corral's logs")
    }

    var runner: CorralServiceRunner {
        get throws {
            guard let runner = running.withLock({ $0?.runner }) else { throw TimeoutError(what: "a running service") }
            return runner
        }
    }

    var provisioner: Provisioner { get throws { try runner.provisioner } }

    var gateway: Gateway {
        get throws {
            guard let gateway = try runner.gateway else { throw TimeoutError(what: "the service's gateway") }
            return gateway
        }
    }

    /// Builds the service as `corral serve` does and runs every service in the background.
    func start() async throws {
        var configuration = CorralConfiguration()
        configuration.templates = templates
        configuration.service.reapInterval = reapInterval
        configuration.gateway = try gatewaySettings(upstream.port)
        var logger = Logger(label: "corral") { label in CapturingLogHandler(capture: self.logs, label: label) }
        logger.logLevel = .trace
        let clock = self.clock
        let runner = try await CorralServiceRunner.prepare(
            configuration: configuration, engine: engine,
            environment: SandboxEnvironment(
                initBinary: try SandboxEnvironment.locateInit(),
                sandboxesDirectory: state.appendingPathComponent("sandboxes", isDirectory: true)),
            sessions: sessions, vault: vault, timer: ServiceTimer(clock: clock, now: { clock.date }), logger: logger)
        let task = Task { try await runner.run(handleSignals: false) }
        running.withLock { $0 = (runner, task) }
    }

    /// Stops the service as a SIGTERM would (sockets close, idle members stay).
    func stop() async {
        guard
            let (_, task) = running.withLock({ state in
                defer { state = nil }; return state
            })
        else { return }
        task.cancel()
        _ = try? await task.value
    }

    func tearDown() async {
        await stop()
        let left = try? await Provisioner.removeEverything(
            engine: engine, sandboxesDirectory: state.appendingPathComponent("sandboxes"))
        #expect(left?.isEmpty != false, "containers left behind: \(left ?? [])")
        upstream.stop()
        engine.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Every container of this state directory's instance.
    func containers() async throws -> [ContainerSummary] {
        let instance = try SandboxRecordStore(directory: state.appendingPathComponent("sandboxes")).instanceID()
        return try await engine.listContainers(
            all: true, labels: ["\(SandboxLabels.managed)=1", "\(SandboxLabels.instance)=\(instance)"])
    }

    /// Directories under `$STATE/sandboxes` (records, claim markers, gateway directories).
    func sandboxDirectories() -> [String] {
        let path = state.appendingPathComponent("sandboxes").path
        return ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { !$0.hasPrefix(".") }
    }

    func storeToken() async throws {
        try await vault.put(
            name: Self.credentialName,
            scope: CredentialScope(parsing: "127.0.0.1:\(upstream.port)/\(Self.owner)"), secret: VaultSecret(token))
    }

    /// `127.0.0.1:PORT/acme/NAME`, as grants and `--repo` name it.
    func repository(_ name: String, owner: String = WorkspaceFixture.owner) -> String {
        "127.0.0.1:\(upstream.port)/\(owner)/\(name)"
    }

    func workspace(_ name: String = "rocket", ref: String? = nil, write: Bool = false) throws -> SandboxWorkspace {
        try SandboxWorkspace(repository: repository(name), ref: ref, write: write)
    }

    func request(_ configure: (inout ProvisionRequest) throws -> Void = { _ in }) rethrows -> ProvisionRequest {
        var request = ProvisionRequest(image: TestEnvironment.baseImage)
        request.resources.memory = .mebibytes(256)
        request.ttl = .seconds(900)
        try configure(&request)
        return request
    }

    static func template(minIdle: Int = 1, configure: (inout SandboxTemplate) -> Void = { _ in }) -> SandboxTemplate {
        var template = SandboxTemplate(
            name: TemplateName(unchecked: "w-\(UUID().uuidString.prefix(6).lowercased())"),
            image: TestEnvironment.baseImage)
        template.resources.memory = .mebibytes(256)
        template.pool.minIdle = minIdle
        template.pool.maxTotal = 4
        template.ttl = .seconds(900)
        configure(&template)
        return template
    }

    // MARK: The token, wherever it might hide

    /// The spellings a leak could take: the token itself, and the Basic header value and the
    /// bare base64 it travels upstream as.
    var tokenSpellings: [String] {
        [
            token, Data("\(Vault.defaultUsername):\(token)".utf8).base64EncodedString(),
            Data(token.utf8).base64EncodedString(),
        ]
    }

    func expectNoToken(in text: String, _ place: String, sourceLocation: SourceLocation = #_sourceLocation) {
        for spelling in tokenSpellings where text.contains(spelling) {
            Issue.record("the token is in \(place)", sourceLocation: sourceLocation)
        }
    }

    /// A scanner over a byte stream for every spelling of the token, and for `control`, a
    /// string known to be in the stream: finding it shows the scan saw what it should.
    func scanner(control: String) -> ByteScanner {
        ByteScanner(needles: tokenSpellings.map { Array($0.utf8) } + [Array(control.utf8)])
    }
}

/// Searches a stream of chunks for needles, across chunk boundaries (memchr for the first
/// byte, then memcmp: fast enough for a whole exported root filesystem in a debug build).
struct ByteScanner {
    let needles: [[UInt8]]
    private(set) var found: Set<Int> = []
    private(set) var bytes: Int64 = 0
    private var carry: [UInt8] = []

    init(needles: [[UInt8]]) { self.needles = needles }

    /// Whether the last needle (the control) was seen.
    var sawControl: Bool { found.contains(needles.count - 1) }
    /// Whether any needle but the last (the token's spellings) was seen.
    var sawToken: Bool { found.contains { $0 < needles.count - 1 } }

    mutating func feed(_ chunk: [UInt8]) {
        bytes += Int64(chunk.count)
        let window = carry + chunk
        window.withUnsafeBytes { haystack in
            for (index, needle) in needles.enumerated() where !found.contains(index) {
                if needle.withUnsafeBytes({ Self.contains(haystack, $0) }) { found.insert(index) }
            }
        }
        let keep = (needles.map(\.count).max() ?? 1) - 1
        carry = Array(window.suffix(keep))
    }

    static func contains(_ haystack: UnsafeRawBufferPointer, _ needle: UnsafeRawBufferPointer) -> Bool {
        guard let base = haystack.baseAddress, let pattern = needle.baseAddress, needle.count > 0,
            haystack.count >= needle.count
        else { return false }
        let first = Int32(needle[0])
        var offset = 0
        let last = haystack.count - needle.count
        while offset <= last {
            guard let hit = memchr(base + offset, first, last - offset + 1) else { return false }
            let position = base.distance(to: UnsafeRawPointer(hit))
            if memcmp(base + position, pattern, needle.count) == 0 { return true }
            offset = position + 1
        }
        return false
    }
}

/// Log lines, message and metadata, for checks that a token never appears.
final class LogCapture: Sendable {
    private let lines = Mutex<[String]>([])

    var all: [String] { lines.withLock { $0 } }

    func append(_ line: String) { lines.withLock { $0.append(line) } }
}

struct CapturingLogHandler: LogHandler {
    let capture: LogCapture
    let label: String
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        let rendered = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        capture.append("\(event.level) \(label): \(event.message) \(rendered)")
    }
}

/// Waits until `condition` holds, checking it every 20 ms, failing after `limit`: for state
/// another task reaches in its own time (a service attaching sockets at start).
func waitUntil(
    _ what: String, limit: Duration = .seconds(60), _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + limit
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw TimeoutError(what: what) }
        try await Task.sleep(for: .milliseconds(20))
    }
}
