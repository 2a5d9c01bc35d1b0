import CorralAPI
import CorralCore
import CorralFleet
import CorralSandbox
import CorralServer
import CorralService
import CorralSession
import CorralWorker
import CurlHTTP
import DockerEngine
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Suite `workers`: what the worker link adds (issue 12). A control plane and a worker run in
/// this process, each with a state directory of its own, on this machine's engine; the worker
/// dials the control plane on loopback (plain HTTP/2 after the upgrade, as on a real link but
/// without TLS). One sandbox on the worker is driven through the control plane (HTTP/1.1 to
/// corrald, then a stream on the worker's link) and straight through the worker's own API (its
/// TCP listener), interleaved: the difference is the hop's cost. Then a warm create on the
/// worker to its first execute, both ways; and executes while another call on the same link has
/// a reader that stopped reading.
struct WorkerSuite: BenchSuite {
    static let name = "workers"
    static let summary =
        "execute, a 16 MiB exec and a warm create to first execute through the control plane and the worker link vs the worker's own API; a stalled reader beside"
    static let warmTemplate = "warm"

    static let tenant = TenantID(unchecked: "bench")
    static let trueInput: JSONValue = .object(["command": .string("true")])

    func run(_ context: BenchContext) async throws -> SuiteReport {
        let engine = try DockerEngineClient(parsing: context.engineEndpoint)
        defer { engine.shutdown() }
        let controlState = context.scratch.appendingPathComponent("workers-control", isDirectory: true)
        let workerState = context.scratch.appendingPathComponent("workers-worker", isDirectory: true)
        var logger = Logger(label: "corral.bench.workers")
        logger.logLevel = .warning
        let group = Mutex<ServiceGroup?>(nil)
        let task = Mutex<Task<Void, any Error>?>(nil)
        func stop() async {
            await group.withLock { $0 }?.triggerGracefulShutdown()
            _ = try? await task.withLock { $0 }?.value
            await ProvisionSuite.removeAll(engine: engine, state: workerState)
            await ProvisionSuite.removeAll(engine: engine, state: controlState)
        }
        do {
            let report = try await measure(context, engine: engine, logger: logger, states: (controlState, workerState))
            {
                services in
                let made = ServiceGroup(
                    configuration: ServiceGroupConfiguration(
                        services: services.map {
                            .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup)
                        },
                        logger: logger))
                group.withLock { $0 = made }
                task.withLock { $0 = Task { try await made.run() } }
            }
            await stop()
            return report
        } catch {
            await stop()
            throw error
        }
    }

    private func server(
        state: URL, engine: DockerEngineClient, logger: Logger, templates: [SandboxTemplate] = [],
        configure: (inout CorralServer.Configuration) -> Void
    ) async throws -> CorralServer {
        let environment = SandboxEnvironment(
            initBinary: try SandboxEnvironment.locateInit(),
            sandboxesDirectory: state.appendingPathComponent("sandboxes", isDirectory: true))
        var configuration = CorralConfiguration()
        configuration.templates = templates
        let runner = try await CorralServiceRunner.prepare(
            configuration: configuration, engine: engine, environment: environment, logger: logger)
        var settings = CorralServer.Configuration(socketPath: nil, listen: "127.0.0.1:0")
        settings.stateDirectory = state.path
        configure(&settings)
        return CorralServer(
            configuration: settings, runner: runner, tenants: TenantRegistry(stateDirectory: state),
            sessions: FileSessionStore(directory: state.appendingPathComponent("sessions", isDirectory: true)),
            brainEnvironment: [:], logger: logger)
    }

    private func measure(
        _ context: BenchContext, engine: DockerEngineClient, logger: Logger, states: (control: URL, worker: URL),
        start: ([any Service]) -> Void
    ) async throws -> SuiteReport {
        let runs = context.quick ? 20 : max(context.runs, 200)
        let streams = context.quick ? 3 : 20
        var workers = WorkerListener.Settings(listen: "127.0.0.1:0")
        workers.fleet.heartbeat = .seconds(1)
        workers.fleet.localGroup = nil
        let control = try await server(state: states.control, engine: engine, logger: logger) { $0.workers = workers }
        // The worker keeps a warm pool of two for the warm creates.
        var warm = SandboxTemplate(name: TemplateName(unchecked: Self.warmTemplate), image: context.image)
        warm.pool.minIdle = 2
        warm.pool.maxTotal = 6
        let worker = try await server(state: states.worker, engine: engine, logger: logger, templates: [warm]) { _ in }
        let pools = worker.runner.pools.map { pool in Task { try await pool.run() } }
        defer { for pool in pools { pool.cancel() } }
        let controlToken = try await control.tenants.add(Self.tenant, groups: ["bench"])
        let workerToken = try await worker.tenants.add(Self.tenant)
        let linkToken = try await WorkerTokenRegistry(stateDirectory: states.control).add(group: "bench").token

        let addresses = Mutex<[String]>([])
        let (ready, continuation) = AsyncStream<Void>.makeStream()
        let note: @Sendable (String) async -> Void = { address in
            addresses.withLock { $0.append(address) }
            continuation.yield()
        }
        guard let listener = control.workerListener(onReady: { await note("workers " + $0) }) else {
            throw CorralError(.internalError, "the control plane has no worker port")
        }
        let controlAPI = control.listener(auth: .tokens, address: .hostname("127.0.0.1", port: 0)) { channel in
            await note("control http://127.0.0.1:\(channel.localAddress?.port ?? 0)")
        }
        let workerAPI = worker.listener(auth: .tokens, address: .hostname("127.0.0.1", port: 0)) { channel in
            await note("worker http://127.0.0.1:\(channel.localAddress?.port ?? 0)")
        }
        start([listener, controlAPI, workerAPI])
        for await _ in ready where addresses.withLock({ $0.count }) == 3 { break }
        func address(_ prefix: String) throws -> String {
            guard let found = addresses.withLock({ $0.first { $0.hasPrefix(prefix + " ") } }) else {
                throw CorralError(.internalError, "no \(prefix) address")
            }
            return String(found.dropFirst(prefix.count + 1))
        }
        var agentSettings = WorkerAgent.Settings(server: try address("workers"), token: linkToken, name: "bench-worker")
        agentSettings.group = "bench"
        let agent = WorkerAgent(settings: agentSettings, host: worker.host, logger: logger)
        let agentGroup = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: [.init(service: agent)], logger: logger))
        let agentTask = Task { try await agentGroup.run() }
        defer {
            Task {
                await agentGroup.triggerGracefulShutdown()
                _ = try? await agentTask.value
            }
        }
        guard let fleet = control.fleet else { throw CorralError(.internalError, "no fleet") }
        let deadline = ContinuousClock.now + .seconds(30)
        while !fleet.summaries().contains(where: { $0.state == "connected" && $0.capacity != nil }) {
            guard ContinuousClock.now < deadline else {
                throw CorralError(.unavailable, "the worker did not connect within 30 s")
            }
            try await Task.sleep(for: .milliseconds(50))
        }

        let viaLink = try CorralClient(endpoint: try HTTPEndpoint(parsing: try address("control")), token: controlToken)
        let direct = try CorralClient(endpoint: try HTTPEndpoint(parsing: try address("worker")), token: workerToken)
        defer {
            viaLink.shutdown()
            direct.shutdown()
        }
        var request = CreateSandboxRequest()
        request.image = context.image
        request.ttl = DurationValue(.seconds(1800))
        let created = try await viaLink.createSandbox(request)
        for _ in 0..<5 {
            _ = try await viaLink.execute(created.id, tool: "bash", input: Self.trueInput)
            _ = try await direct.execute(created.id, tool: "bash", input: Self.trueInput)
        }
        func execute(_ client: CorralClient, into samples: inout Samples) async throws {
            let (output, ms) = try await measureMilliseconds {
                try await client.execute(created.id, tool: "bash", input: Self.trueInput)
            }
            guard !output.isError else { throw CorralError(.internalError, "execute failed: \(output.text)") }
            samples.append(ms)
        }
        func stream(_ client: CorralClient, into samples: inout Samples) async throws {
            let received = Mutex(0)
            let (status, ms) = try await measureMilliseconds {
                try await client.exec(created.id, SandboxCommand(["head", "-c", "16777216", "/dev/zero"])) { _, bytes in
                    received.withLock { $0 += bytes.count }
                }
            }
            guard status.exitCode == 0, received.withLock({ $0 }) == 16 << 20 else {
                throw CorralError(
                    .internalError, "the 16 MiB exec ended with \(status), \(received.withLock { $0 }) bytes")
            }
            samples.append(ms)
        }
        /// `measure` `runs` times with each client, alternating which goes first.
        func alternating(_ runs: Int, _ measure: (CorralClient, inout Samples) async throws -> Void) async throws
            -> (link: Samples, direct: Samples)
        {
            var linkSamples = Samples(), directSamples = Samples()
            for run in 0..<runs {
                if run.isMultiple(of: 2) {
                    try await measure(viaLink, &linkSamples)
                    try await measure(direct, &directSamples)
                } else {
                    try await measure(direct, &directSamples)
                    try await measure(viaLink, &linkSamples)
                }
            }
            return (linkSamples, directSamples)
        }
        let (linkExecute, directExecute) = try await alternating(runs, execute)
        let (linkStream, directStream) = try await alternating(streams, stream)

        // A warm create on the worker to its first execute, each way, from a full pool each time.
        let warmRuns = context.quick ? 4 : 16
        guard let pool = worker.runner.pools.first else { throw CorralError(.internalError, "no warm pool") }
        // Its parts are kept too: the create alone, the first execute, and a second one.
        let parts = Mutex([String: Samples]())
        func warmCreate(_ client: CorralClient, into samples: inout Samples) async throws {
            _ = try await pool.waitForStatus { $0.idle >= 2 }
            var request = CreateSandboxRequest()
            request.template = Self.warmTemplate
            let clock = ContinuousClock()
            let started = clock.now
            let made = try await client.createSandbox(request)
            let createdAt = clock.now
            _ = try await client.execute(made.id, tool: "bash", input: Self.trueInput)
            let executed = clock.now
            samples.append((executed - started).milliseconds)
            _ = try await client.execute(made.id, tool: "bash", input: Self.trueInput)
            let way = client === viaLink ? "via-control-plane" : "worker-api"
            parts.withLock {
                $0["create/\(way)", default: Samples()].append((createdAt - started).milliseconds)
                $0["first/\(way)", default: Samples()].append((executed - createdAt).milliseconds)
                $0["second/\(way)", default: Samples()].append((clock.now - executed).milliseconds)
                for phase in ["claim", "workspace", "ready"] {
                    $0["\(phase)/\(way)", default: Samples()].append(made.phases[phase] ?? 0)
                }
            }
            guard made.path == "warm" else { throw CorralError(.internalError, "a create missed the warm pool") }
            try await client.removeSandbox(made.id)
        }
        let (linkWarm, directWarm) = try await alternating(warmRuns, warmCreate)
        let warmParts = parts.withLock { $0 }
        func part(_ name: String) -> [Measurement] {
            ["via-control-plane", "worker-api"].map {
                Measurement(subject: $0, unit: "ms", samples: warmParts["\(name)/\($0)"] ?? Samples())
            }
        }

        // A call whose reader stopped: an exec whose 64 MiB of output nobody reads holds its
        // stream's window full; the other calls on the link go on. (The command then sleeps: its
        // output is written at once, so the sandbox's CPU is not what is measured.) The calls
        // without it are taken just before, on the same sandbox.
        let stallRuns = context.quick ? 20 : 100
        var beforeStall = Samples()
        for _ in 0..<stallRuns { try await execute(viaLink, into: &beforeStall) }
        let stalledClient = try CorralClient(
            endpoint: try HTTPEndpoint(parsing: try address("control")), token: controlToken)
        defer { stalledClient.shutdown() }
        let stalledSandbox = try await viaLink.createSandbox(request)
        // The handler waits on this gate, which opens when the reader is released.
        let (release, releaser) = AsyncStream<Void>.makeStream()
        let gate = Task { for await _ in release {} }
        let received = Mutex(0)
        let stalled = Task {
            try await stalledClient.exec(
                stalledSandbox.id, SandboxCommand(["sh", "-c", "head -c 67108864 /dev/zero; exec sleep 3600"])
            ) { _, bytes in
                received.withLock { $0 += bytes.count }
                await gate.value
            }
        }
        // Until its windows are full and it stalls.
        var last = -1
        while received.withLock({ $0 }) != last {
            last = received.withLock { $0 }
            try await Task.sleep(for: .milliseconds(500))
        }
        var besideStall = Samples()
        for _ in 0..<stallRuns { try await execute(viaLink, into: &besideStall) }
        releaser.finish()
        try await viaLink.removeSandbox(stalledSandbox.id)
        _ = try? await stalled.value
        try await viaLink.removeSandbox(created.id)
        let added = linkExecute.median - directExecute.median
        let warmP50 = linkWarm.median
        let stallRatio = besideStall.median / max(beforeStall.median, 0.001)
        return SuiteReport(
            suite: Self.name,
            comparisons: [
                Comparison(
                    metric: "execute of `true` (bash tool)",
                    measurements: [
                        Measurement(subject: "via-control-plane", unit: "ms", samples: linkExecute),
                        Measurement(subject: "worker-api", unit: "ms", samples: directExecute),
                    ],
                    targets: [
                        TargetCheck(
                            target: "the control plane and link add at most 1.5 ms at p50",
                            observed: String(format: "%+.2f ms", added), met: added <= 1.5)
                    ]),
                Comparison(
                    metric: "warm create on the worker to its first execute",
                    measurements: [
                        Measurement(subject: "via-control-plane", unit: "ms", samples: linkWarm),
                        Measurement(subject: "worker-api", unit: "ms", samples: directWarm),
                    ],
                    targets: [
                        TargetCheck(
                            target: "at most 20 ms at p50 through the control plane",
                            observed: String(format: "%.2f ms", warmP50), met: warmP50 <= 20)
                    ]),
                Comparison(metric: "its parts: the warm create alone", measurements: part("create")),
                Comparison(
                    metric: "its parts: on the worker, the claim (marker and the engine's rename)",
                    measurements: part("claim")),
                Comparison(
                    metric: "its parts: on the worker, the gateway's attach", measurements: part("workspace")),
                Comparison(
                    metric: "its parts: on the worker, the record (written and synced)", measurements: part("ready")),
                Comparison(metric: "its parts: the first execute on the new sandbox", measurements: part("first")),
                Comparison(metric: "its parts: a second execute right after", measurements: part("second")),
                Comparison(
                    metric: "execute of `true` through the control plane while a reader on the link has stalled",
                    measurements: [
                        Measurement(subject: "beside-a-stalled-reader", unit: "ms", samples: besideStall),
                        Measurement(subject: "just-before", unit: "ms", samples: beforeStall),
                    ],
                    targets: [
                        TargetCheck(
                            target: "p50 unchanged within noise (at most 1.25x)",
                            observed: String(format: "%.2fx", stallRatio), met: stallRatio <= 1.25)
                    ]),
                Comparison(
                    metric: "exec streaming 16 MiB of output",
                    measurements: [
                        Measurement(subject: "via-control-plane", unit: "ms", samples: linkStream),
                        Measurement(subject: "worker-api", unit: "ms", samples: directStream),
                    ],
                    targets: []),
            ],
            notes: [
                "both servers in this process, on loopback; the control plane is HTTP/1.1 to corrald (libcurl), then one HTTP/2 stream on the worker's link (no TLS here); worker-api is the same sandbox through the worker's own TCP API",
                "heartbeats every 1 s run during the measurement, as they would",
                "the warm creates wait for the worker's pool to hold two members first, so each claims a warm one; their removal is not timed; 'its parts' split each: the create as the client sees it, the worker's own phases (from the create's answer), the first execute and a second one right after",
                "the stalled reader: 64 MiB of output, then a sleep, on another sandbox of the same worker, through the control plane, whose output handler stopped reading once its windows filled; just-before is the same calls taken right before it started",
                "not measured here: control-plane memory per worker and per remote sandbox, and three workers against one (every engine on this machine shares its two cores)",
            ])
    }
}
