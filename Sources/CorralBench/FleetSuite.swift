import CorralAPI
import CorralCore
import CorralSandbox
import CurlHTTP
import DockerEngine
import Foundation

/// Suite `fleet`: what a control plane holds for its workers (issue 12), as processes: one
/// `corral serve` with a worker port and no sandboxes of its own, and `corral worker`s that dial
/// it on loopback, all on this machine's engine. Its resident memory is read from /proc after
/// each worker connects and after each batch of sandboxes placed on them, beside what each
/// worker process itself holds. And the same load (cold creates, then executes) with one
/// worker connected and with three.
struct FleetSuite: BenchSuite {
    static let name = "fleet"
    static let summary = "control-plane memory per connected worker and per sandbox on a worker, beside a worker's own"

    func run(_ context: BenchContext) async throws -> SuiteReport {
        let corral = BenchProcess.sibling("corral")
        guard FileManager.default.isExecutableFile(atPath: corral) else {
            throw CorralError(.notFound, "no corral beside corral-bench at \(corral)", hint: "swift build -c release")
        }
        // Three at least: the load runs with one worker connected and again with three.
        let workerCount = context.quick ? 3 : 6
        let batches = context.quick ? 1 : 5
        let batchSize = context.quick ? 2 : 6
        let root = context.scratch.appendingPathComponent("fleet-suite-\(UUID().uuidString.prefix(8))")
        let control = root.appendingPathComponent("control")
        let workerStates = (0..<workerCount).map { root.appendingPathComponent("worker\($0)") }
        for directory in [control] + workerStates {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        }
        let port = try BenchProcess.freePort()
        let controlConfig = root.appendingPathComponent("control.toml")
        let controlText = """
            [limits]
            sandboxes_per_tenant = 200
            [workers]
            listen = "127.0.0.1:\(port)"
            heartbeat = "1s"
            local_group = ""

            """
        try Data(controlText.utf8).write(to: controlConfig)
        let workerConfig = root.appendingPathComponent("worker.toml")
        try Data("[[templates]]\nname = \"bench\"\nimage = \"\(context.image)\"\nmemory = \"128m\"\n".utf8).write(
            to: workerConfig)
        var base = ProcessInfo.processInfo.environment
        base["CORRAL_ENGINE"] = context.engineEndpoint
        base["CORRAL_CONFIG"] = ""
        base["CORRAL_LOG"] = "error"
        base["CORRAL_AGENT"] = "0"
        var controlEnvironment = base
        controlEnvironment["CORRAL_STATE_DIR"] = control.path

        var processes: [ChildProcess] = []
        func tearDown() async {
            for process in processes.reversed() { BenchProcess.stop(process) }
            if let engine = try? DockerEngineClient(parsing: context.engineEndpoint) {
                for state in [control] + workerStates {
                    _ = try? await Provisioner.removeEverything(
                        engine: engine, sandboxesDirectory: state.appendingPathComponent("sandboxes"))
                }
                engine.shutdown()
            }
            try? FileManager.default.removeItem(at: root)
        }
        do {
            let service = try BenchProcess.start(
                corral, ["serve", "--listen", "", "--config", controlConfig.path], environment: controlEnvironment,
                log: root.appendingPathComponent("control.log"))
            processes.append(service)
            try await BenchProcess.waitForSocket(control.appendingPathComponent("corral.sock").path)
            let token = try BenchProcess.output(
                corral, ["worker", "token", "add", "--group", "default"], environment: controlEnvironment)
            try await Task.sleep(for: .seconds(2))
            let client = try CorralClient(
                endpoint: .unixSocket(path: control.appendingPathComponent("corral.sock").path))
            defer { client.shutdown() }
            var perWorker = Samples()
            var workerRSS = Samples()
            var workers: [ChildProcess] = []
            var throughput: [Int: Throughput] = [:]
            for (index, state) in workerStates.enumerated() {
                let before = try Self.residentKiB(service.pid)
                var environment = base
                environment["CORRAL_STATE_DIR"] = state.path
                let worker = try BenchProcess.start(
                    corral,
                    [
                        "worker", "--server", "http://127.0.0.1:\(port)", "--token", token, "--name", "w\(index)",
                        "--config", workerConfig.path,
                    ], environment: environment, log: root.appendingPathComponent("worker\(index).log"))
                processes.append(worker)
                workers.append(worker)
                try await Self.waitConnected(corral, count: index + 1, environment: controlEnvironment)
                // A few heartbeats, so that what the link and its status hold is in place.
                try await Task.sleep(for: .seconds(3))
                perWorker.append(Double(try Self.residentKiB(service.pid) - before) / 1024)
                workerRSS.append(Double(try Self.residentKiB(worker.pid)) / 1024)
                // Three workers against one: the same load with one worker connected, then three.
                if index == 0 || index == 2 {
                    throughput[index + 1] = try await Self.throughput(client, quick: context.quick)
                }
            }
            var perSandbox = Samples()
            var workerPerSandbox = Samples()
            var created: [SandboxID] = []
            for _ in 0..<batches {
                let before = try Self.residentKiB(service.pid)
                let workersBefore = try workers.map { try Self.residentKiB($0.pid) }.reduce(0, +)
                for _ in 0..<batchSize {
                    var request = CreateSandboxRequest()
                    request.template = "bench"
                    created.append(try await client.createSandbox(request).id)
                }
                try await Task.sleep(for: .seconds(3))
                perSandbox.append(Double(try Self.residentKiB(service.pid) - before) / Double(batchSize))
                let workersAfter = try workers.map { try Self.residentKiB($0.pid) }.reduce(0, +)
                workerPerSandbox.append(Double(workersAfter - workersBefore) / Double(batchSize))
            }
            let listed = try await client.listSandboxes()
            guard Set(listed.map(\.id)).isSuperset(of: created), listed.allSatisfy({ $0.worker != nil }) else {
                throw CorralError(
                    .internalError, "the control plane lists \(listed.count) of \(created.count) sandboxes")
            }
            for id in created { try await client.removeSandbox(id) }
            await tearDown()
            let (one, three) = (throughput[1] ?? Throughput(), throughput[3] ?? Throughput())
            let scaling = [
                "scaling, three workers against one: cold creates \(Self.ratio(three.createsPerSecond, one.createsPerSecond)), executes \(Self.ratio(three.executesPerSecond, one.executesPerSecond))",
                "three against one: \(Throughput.creates) cold creates at concurrency 6, then 32 callers executing `true` for \(Throughput.seconds(quick: context.quick)) s, through the control plane; all workers share this machine's one engine and two cores, so the factor shows what the control plane's placement and links cost, not what more hosts add",
            ]
            return SuiteReport(
                suite: Self.name,
                comparisons: [
                    PlacementSimulation().comparison(seeds: context.quick ? 2 : 10),
                    Comparison(
                        metric: "cold creates through the control plane, concurrency 6",
                        measurements: [
                            Measurement(subject: "1 worker", unit: "creates/s", samples: one.createRate),
                            Measurement(subject: "3 workers", unit: "creates/s", samples: three.createRate),
                            Measurement(subject: "1 worker, latency", unit: "ms", samples: one.createLatency),
                            Measurement(subject: "3 workers, latency", unit: "ms", samples: three.createLatency),
                        ], targets: []),
                    Comparison(
                        metric: "executes through the control plane, concurrency 32",
                        measurements: [
                            Measurement(subject: "1 worker", unit: "executes/s", samples: one.executeRate),
                            Measurement(subject: "3 workers", unit: "executes/s", samples: three.executeRate),
                        ], targets: []),
                    Comparison(
                        metric: "resident memory per connected worker",
                        measurements: [
                            Measurement(subject: "control-plane-added", unit: "MiB", samples: perWorker),
                            Measurement(subject: "worker-process", unit: "MiB", samples: workerRSS),
                        ], targets: []),
                    Comparison(
                        metric: "resident memory per sandbox on a worker",
                        measurements: [
                            Measurement(subject: "control-plane-added", unit: "KiB", samples: perSandbox),
                            Measurement(subject: "workers-added", unit: "KiB", samples: workerPerSandbox),
                        ], targets: []),
                ],
                notes: [
                    "\(workerCount) `corral worker` processes dial one `corral serve` on loopback (plain HTTP/2 after the upgrade), all on this machine's engine; heartbeats every 1 s",
                    "VmRSS from /proc, read 3 s after each worker connected and after each batch of \(batchSize) cold creates through the control plane; one sample per worker and per batch",
                    "resident memory moves in allocator-sized steps: a single sample can be 0 or several hundred KiB; read the median",
                    "placement, simulated: placement's own choice (`WorkerFleet.bestOfSample`) on a fleet under churn (exponential lifetimes, arrivals spread over each heartbeat), with each worker's count as its last heartbeat listed it; the fullest worker's share of its room at each heartbeat, over 350 heartbeats per seed",
                ] + scaling)
        } catch {
            await tearDown()
            throw error
        }
    }

    /// What one load on the fleet as it is achieved: cold creates at concurrency 6, then 32
    /// callers executing `true` round-robin on those sandboxes, which are then removed.
    struct Throughput {
        static let creates = 12
        static func seconds(quick: Bool) -> Int { quick ? 1 : 3 }

        var createRate = Samples()
        var createLatency = Samples()
        var executeRate = Samples()

        var createsPerSecond: Double { createRate.median }
        var executesPerSecond: Double { executeRate.median }
    }

    static func throughput(_ client: CorralClient, quick: Bool) async throws -> Throughput {
        var result = Throughput()
        let started = ContinuousClock.now
        let created = try await withThrowingTaskGroup(of: (SandboxID, Double).self) { group in
            var next = 0
            func create() {
                next += 1
                group.addTask {
                    let begin = ContinuousClock.now
                    var request = CreateSandboxRequest()
                    request.template = "bench"
                    let id = try await client.createSandbox(request).id
                    return (id, (ContinuousClock.now - begin).benchMilliseconds)
                }
            }
            for _ in 0..<6 { create() }
            var created: [(SandboxID, Double)] = []
            while let one = try await group.next() {
                created.append(one)
                if next < Throughput.creates { create() }
            }
            return created
        }
        result.createRate.append(Double(created.count) / (ContinuousClock.now - started).benchSeconds)
        for (_, milliseconds) in created { result.createLatency.append(milliseconds) }
        let ids = created.map(\.0)
        // Per-second counts of executes that completed, over the window.
        let windows = Throughput.seconds(quick: quick)
        let begin = ContinuousClock.now
        let deadline = begin + .seconds(windows)
        let counts = try await withThrowingTaskGroup(of: [Int].self) { group in
            for caller in 0..<32 {
                let id = ids[caller % ids.count]
                group.addTask {
                    var counts = [Int](repeating: 0, count: windows)
                    while ContinuousClock.now < deadline {
                        _ = try await client.execute(id, tool: "bash", input: .object(["command": .string("true")]))
                        let second = Int((ContinuousClock.now - begin).benchSeconds)
                        if second < windows { counts[second] += 1 }
                    }
                    return counts
                }
            }
            var total = [Int](repeating: 0, count: windows)
            for try await counts in group { for (second, count) in counts.enumerated() { total[second] += count } }
            return total
        }
        for count in counts { result.executeRate.append(Double(count)) }
        for id in ids { try await client.removeSandbox(id) }
        return result
    }

    static func ratio(_ numerator: Double, _ denominator: Double) -> String {
        guard denominator > 0, numerator.isFinite else { return "n/a" }
        return String(format: "%.2fx", numerator / denominator)
    }

    /// VmRSS of a process, in KiB.
    static func residentKiB(_ pid: pid_t) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let value = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { throw CorralError(.io, "no VmRSS for process \(pid)") }
        return value
    }

    /// Until `corral worker ls --json` on the control plane shows `count` connected workers.
    static func waitConnected(_ corral: String, count: Int, environment: [String: String]) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let listed = try BenchProcess.output(corral, ["worker", "ls", "--json"], environment: environment)
            let workers = (try? JSONDecoder().decode([JSONValue].self, from: Data(listed.utf8))) ?? []
            if workers.filter({ $0["state"]?.stringValue == "connected" && $0["capacity"] != nil }).count >= count {
                return
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw CorralError(.timeout, "\(count) workers did not connect within 60 s")
    }
}
