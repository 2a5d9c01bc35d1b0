import CorralAPI
import CorralCore
import CorralSandbox
import CorralServer
import CorralService
import CorralSession
import CurlHTTP
import DockerEngine
import Foundation
import Logging
import ServiceLifecycle

/// Suite `api`: what corrald's HTTP API adds to execute. A corrald runs in this process on
/// 127.0.0.1 (port 0) with a state directory of its own; the same sandbox is driven through
/// `POST /v1/sandboxes/{id}/execute` and through the library's `Sandbox.execute`, interleaved.
/// Then many sessions at once, each with its own client and sandbox, execute through the API.
struct APISuite: BenchSuite {
    static let name = "api"
    static let summary =
        "execute of `true` through corrald vs the library; 50 concurrent sessions x 100 executes through the API"

    static let tenant = TenantID(unchecked: "bench")
    static let trueInput: JSONValue = .object(["command": .string("true")])

    func run(_ context: BenchContext) async throws -> SuiteReport {
        let engine = try DockerEngineClient(parsing: context.engineEndpoint)
        defer { engine.shutdown() }
        let state = context.scratch.appendingPathComponent("api-state", isDirectory: true)
        let service = RunningService()
        do {
            let report = try await measure(context, engine: engine, state: state, service: service)
            await service.stop()
            await ProvisionSuite.removeAll(engine: engine, state: state)
            return report
        } catch {
            await service.stop()
            await ProvisionSuite.removeAll(engine: engine, state: state)
            throw error
        }
    }

    private func measure(
        _ context: BenchContext, engine: DockerEngineClient, state: URL, service: RunningService
    ) async throws -> SuiteReport {
        let sessions = context.quick ? 10 : 50
        let executesPerSession = context.quick ? 10 : 100
        let runs = context.quick ? 20 : max(context.runs, 200)

        // No templates: no pool refills while measuring, every sandbox made cold on request.
        let environment = SandboxEnvironment(
            initBinary: try SandboxEnvironment.locateInit(),
            sandboxesDirectory: state.appendingPathComponent("sandboxes", isDirectory: true))
        var logger = Logger(label: "corral.bench.api")
        logger.logLevel = .warning
        let runner = try await CorralServiceRunner.prepare(
            configuration: CorralConfiguration(), engine: engine, environment: environment, logger: logger)
        let tenants = TenantRegistry(stateDirectory: state)
        let token = try await tenants.add(Self.tenant)
        var settings = CorralServer.Configuration(socketPath: nil, listen: "127.0.0.1:0")
        settings.sandboxesPerTenant = sessions + 8
        let server = CorralServer(
            configuration: settings, runner: runner, tenants: tenants,
            sessions: FileSessionStore(directory: state.appendingPathComponent("sessions", isDirectory: true)),
            brainEnvironment: [:], logger: logger)
        let url = try await service.start(server, logger: logger)
        let endpoint = try HTTPEndpoint(parsing: url)

        // 1. One sandbox, two ways in, interleaved (order alternating) so drift hits both alike.
        let client = try CorralClient(endpoint: endpoint, token: token)
        defer { client.shutdown() }
        var request = CreateSandboxRequest()
        request.image = context.image
        request.ttl = DurationValue(.seconds(1800))
        request.labels = ["bench": "api"]
        let created = try await client.createSandbox(request)
        let sandbox = try await runner.provisioner.sandbox(created.id, tenant: Self.tenant)
        for _ in 0..<5 {
            _ = try await client.execute(created.id, tool: "bash", input: Self.trueInput)
            _ = try await sandbox.execute(tool: "bash", input: Self.trueInput)
        }
        var throughAPI = Samples(), throughLibrary = Samples(), withLookup = Samples()
        for run in 0..<runs {
            func api() async throws {
                let (output, ms) = try await measureMilliseconds {
                    try await client.execute(created.id, tool: "bash", input: Self.trueInput)
                }
                guard !output.isError else {
                    throw CorralError(.internalError, "execute through the API failed: \(output.text)")
                }
                throughAPI.append(ms)
            }
            func library() async throws {
                let (output, ms) = try await measureMilliseconds {
                    try await sandbox.execute(tool: "bash", input: Self.trueInput)
                }
                guard !output.isError else {
                    throw CorralError(.internalError, "execute through the library failed: \(output.text)")
                }
                throughLibrary.append(ms)
            }
            // What the route does besides HTTP: find the caller's sandbox (an engine inspect),
            // then execute.
            func lookup() async throws {
                let (output, ms) = try await measureMilliseconds {
                    try await runner.provisioner.sandbox(created.id, tenant: Self.tenant).execute(
                        tool: "bash", input: Self.trueInput)
                }
                guard !output.isError else {
                    throw CorralError(.internalError, "execute after a lookup failed: \(output.text)")
                }
                withLookup.append(ms)
            }
            if run.isMultiple(of: 2) {
                try await api()
                try await library()
                try await lookup()
            } else {
                try await lookup()
                try await library()
                try await api()
            }
        }
        try await client.removeSandbox(created.id)

        // 2. Many sessions at once, each a client of its own (as separate harnesses would be)
        // with its own session and sandbox. Sandboxes are made first, so that the executes
        // measured overlap only each other.
        let sessionsClient = try CurlHTTPClient(endpoint: endpoint)
        defer { sessionsClient.shutdown() }
        let workers = try await Self.prepareWorkers(
            count: sessions, endpoint: endpoint, token: token, image: context.image, sessions: sessionsClient)
        defer { for worker in workers { worker.client.shutdown() } }
        let clock = ContinuousClock()
        let loadStart = clock.now
        let results = await withTaskGroup(of: WorkerResult.self) { group in
            for worker in workers {
                group.addTask { await worker.execute(times: executesPerSession) }
            }
            var all: [WorkerResult] = []
            for await result in group { all.append(result) }
            return all
        }
        let loadSeconds = (clock.now - loadStart).benchMilliseconds / 1000
        var removalErrors = 0
        for worker in workers {
            do { try await worker.client.removeSandbox(worker.sandbox) } catch { removalErrors += 1 }
        }
        let concurrent = Samples(results.flatMap(\.latencies))
        let errors = results.reduce(0) { $0 + $1.errors.count }
        let firstError = results.lazy.compactMap(\.errors.first).first

        let overhead = throughAPI.median - throughLibrary.median
        var notes = [
            "corrald runs in this process on 127.0.0.1 (HTTP/1.1, bearer token, keep-alive through libcurl); the library subject calls Sandbox.execute on the same sandbox; library+lookup first finds the sandbox as the route does (Provisioner.sandbox: an engine inspect), so corral-api minus library+lookup is the HTTP layer's own cost",
            "concurrent: \(sessions) sessions, each with its own client, session and cold sandbox, \(executesPerSession) executes each, all at once; \(String(format: "%.0f", Double(concurrent.count) / max(loadSeconds, 0.001))) executes/s over \(String(format: "%.1f", loadSeconds)) s on this machine's engine",
        ]
        notes.append(
            String(
                format: "p50 split: finding the sandbox (engine inspect) %+.2f ms, HTTP and JSON %+.2f ms",
                withLookup.median - throughLibrary.median, throughAPI.median - withLookup.median))
        if let firstError { notes.append("first error under load: \(firstError)") }
        if removalErrors > 0 { notes.append("\(removalErrors) sandbox removals failed after the load") }
        return SuiteReport(
            suite: Self.name,
            comparisons: [
                Comparison(
                    metric: "execute of `true` (bash tool)",
                    measurements: [
                        Measurement(subject: "corral-api", unit: "ms", samples: throughAPI),
                        Measurement(subject: "library", unit: "ms", samples: throughLibrary),
                        Measurement(subject: "library+lookup", unit: "ms", samples: withLookup),
                    ],
                    targets: [
                        TargetCheck(
                            target: "API at most +2 ms over the library at p50",
                            observed: String(format: "%+.2f ms", overhead),
                            met: overhead <= 2)
                    ]),
                Comparison(
                    metric: "\(sessions) sessions x \(executesPerSession) executes, concurrent",
                    measurements: [
                        Measurement(subject: "corral-api", unit: "ms", samples: concurrent),
                        Measurement(subject: "errors", unit: "count", value: Double(errors)),
                    ],
                    targets: [
                        TargetCheck(
                            target: "0 errors",
                            observed:
                                "\(errors) of \(sessions * executesPerSession), p99 \(String(format: "%.1f", concurrent.p99)) ms",
                            met: errors == 0 && concurrent.count == sessions * executesPerSession)
                    ]),
            ],
            notes: notes)
    }

    static func prepareWorkers(
        count: Int, endpoint: HTTPEndpoint, token: String, image: String, sessions: CurlHTTPClient
    ) async throws -> [Worker] {
        // A few at a time: cold starts on a small machine queue in the engine anyway.
        let concurrency = 8
        return try await withThrowingTaskGroup(of: Worker.self) { group in
            var workers: [Worker] = []
            var next = 0
            func add() {
                guard next < count else { return }
                next += 1
                group.addTask {
                    try await Worker.make(endpoint: endpoint, token: token, image: image, sessions: sessions)
                }
            }
            for _ in 0..<concurrency { add() }
            while let worker = try await group.next() {
                workers.append(worker)
                add()
            }
            return workers
        }
    }
}

/// One session of the load: its own client, session and sandbox.
struct Worker: Sendable {
    let client: CorralClient
    let session: SessionID
    let sandbox: SandboxID

    static func make(endpoint: HTTPEndpoint, token: String, image: String, sessions: CurlHTTPClient) async throws
        -> Worker
    {
        let session = try await createSession(sessions, token: token)
        let client = try CorralClient(endpoint: endpoint, token: token)
        do {
            var request = CreateSandboxRequest()
            request.image = image
            request.ttl = DurationValue(.seconds(1800))
            request.labels = ["bench": "api"]
            request.session = session.rawValue
            let created = try await client.createSandbox(request)
            return Worker(client: client, session: session, sandbox: created.id)
        } catch {
            client.shutdown()
            throw error
        }
    }

    /// `POST /v1/sessions`, by hand: the command line's client has no session calls yet.
    static func createSession(_ http: CurlHTTPClient, token: String) async throws -> SessionID {
        let body = try JSONEncoder().encode(CreateSessionRequest(metadata: ["bench": "api"]))
        let response = try await http.execute(
            HTTPRequest(
                .post, "/v1/sessions",
                headers: ["Authorization": "Bearer \(token)", "Content-Type": "application/json"],
                body: .bytes(Array(body))))
        guard response.status == 201 else {
            throw CorralError(.internalError, "POST /v1/sessions answered \(response.status): \(response.bodyText)")
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(SessionInfo.self, from: Data(response.body)).id
    }

    func execute(times: Int) async -> WorkerResult {
        var result = WorkerResult()
        for _ in 0..<times {
            do {
                let (output, ms) = try await measureMilliseconds {
                    try await client.execute(sandbox, tool: "bash", input: APISuite.trueInput)
                }
                if output.isError {
                    result.errors.append("tool error: \(output.text.prefix(200))")
                } else {
                    result.latencies.append(ms)
                }
            } catch {
                result.errors.append("\(error)")
            }
        }
        return result
    }
}

struct WorkerResult: Sendable {
    var latencies: [Double] = []
    var errors: [String] = []
}

/// corrald in this process: its listener and the runner's services in a service group of the
/// suite's own, stopped gracefully (requests drain) when the suite is done.
actor RunningService {
    private var group: ServiceGroup?
    private var task: Task<Void, any Error>?

    /// Starts `server` and returns its URL once it listens.
    func start(_ server: CorralServer, logger: Logger) async throws -> String {
        let (addresses, continuation) = AsyncStream<String>.makeStream()
        let listeners = try server.applications(onReady: { continuation.yield($0) })
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: (listeners + server.runner.services).map {
                    .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup)
                },
                logger: logger))
        self.group = group
        task = Task {
            defer { continuation.finish() }
            try await group.run()
        }
        for await address in addresses where address.hasPrefix("http://") { return address }
        // The stream ended before the listener was up: the service failed to start.
        if let task { try await task.value }
        throw CorralError(.unavailable, "corrald stopped before it listened")
    }

    func stop() async {
        await group?.triggerGracefulShutdown()
        _ = try? await task?.value
        group = nil
        task = nil
    }
}
