import CorralCore
import CorralSandbox
import DockerEngine
import Foundation

/// Time to first token for a sandbox: from `provision()` to the first successful
/// `execute("bash", "true")`, warm (claimed from a pool) and cold, beside the docker CLI doing
/// the same (`docker run -d`, then `docker exec`), in one run. Then density: idle warm members
/// of the base image and the memory each takes, read from its cgroup.
struct ProvisionSuite: BenchSuite {
    static let name = "provision"
    static let summary = "provision() to first execute of `true`: warm, cold, docker CLI; memory of idle warm members"

    func run(_ context: BenchContext) async throws -> SuiteReport {
        let engine = try DockerEngineClient(parsing: context.engineEndpoint)
        defer { engine.shutdown() }
        let state = context.scratch.appendingPathComponent("provision-state", isDirectory: true)
        do {
            let report = try await measure(context, engine: engine, state: state)
            await Self.removeAll(engine: engine, state: state)
            return report
        } catch {
            await Self.removeAll(engine: engine, state: state)
            throw error
        }
    }

    private func measure(_ context: BenchContext, engine: DockerEngineClient, state: URL) async throws -> SuiteReport {
        let runs = context.quick ? 5 : max(context.runs, 30)
        let densityMembers = context.quick ? 5 : 100
        var template = SandboxTemplate(name: TemplateName(unchecked: "bench"), image: context.image)
        template.resources.memory = .mebibytes(256)
        template.pool.minIdle = 2
        template.pool.maxTotal = 1000
        let provisioner = Provisioner(
            engine: engine,
            configuration: .init(
                environment: SandboxEnvironment(
                    initBinary: try SandboxEnvironment.locateInit(),
                    sandboxesDirectory: state.appendingPathComponent("sandboxes", isDirectory: true)),
                templates: [template]))

        // Warm: the pool runs as `corral serve` runs it; each claim is measured with the pool
        // full, so a refill started by the previous claim does not share the two cores.
        var warm = Samples()
        var warmClaim = Samples()
        var executeAgain = Samples()
        var configuration = WarmPool.Configuration()
        configuration.checkInterval = .seconds(1)
        let pool = WarmPool(template: template, provisioner: provisioner, configuration: configuration)
        let poolTask = Task { try await pool.run() }
        do {
            var request = ProvisionRequest()
            request.template = template.name
            for index in 0..<(runs + 2) {
                _ = try await Self.waitFor(pool, idle: template.pool.minIdle)
                let (sandbox, elapsed) = try await measureMilliseconds {
                    let sandbox = try await provisioner.provision(request)
                    try await Self.executeTrue(sandbox)
                    return sandbox
                }
                guard sandbox.provisioning?.path == .warm else {
                    throw CorralError(.internalError, "a claim with a full pool went cold")
                }
                // Two warm-up runs are not counted: first connections, first exec.
                if index >= 2 {
                    warm.append(elapsed)
                    warmClaim.append(sandbox.provisioning?.totalMilliseconds ?? .nan)
                    // The second execute on the same sandbox: what the first one costs by itself.
                    let (_, again) = try await measureMilliseconds { try await Self.executeTrue(sandbox) }
                    executeAgain.append(again)
                }
                try await sandbox.remove()
            }
        } catch {
            poolTask.cancel()
            _ = try? await poolTask.value
            throw error
        }

        // Density: the same pool grown to `densityMembers` idle members.
        poolTask.cancel()
        _ = try? await poolTask.value
        var big = template
        big.pool.minIdle = densityMembers
        big.pool.refillConcurrency = 4
        let densityPool = WarmPool(template: big, provisioner: provisioner, configuration: configuration)
        let densityTask = Task { try await densityPool.run() }
        let fillStart = ContinuousClock.now
        _ = try await Self.waitFor(densityPool, idle: densityMembers, limit: .seconds(900))
        let fillSeconds = (ContinuousClock.now - fillStart).benchMilliseconds / 1000
        densityTask.cancel()
        _ = try? await densityTask.value
        let members = try await provisioner.poolMembers(template: template.name).filter { $0.state == .idle }
        let containers = try await engine.listContainers(
            all: false,
            labels: ["\(SandboxLabels.instance)=\(try provisioner.instanceID())", "\(SandboxLabels.pool)=bench"])
        var usage = Samples()
        var rss = Samples()
        for container in containers {
            guard let memory = Self.cgroupMemory(containerID: container.id) else { continue }
            usage.append(Double(memory.usage) / 1_048_576)
            if let value = memory.rss { rss.append(Double(value) / 1_048_576) }
        }
        _ = try await provisioner.drainPools(template: template.name)

        // Cold: the same template made on demand (no pool runs).
        var cold = Samples()
        var coldReady = Samples()
        var coldRequest = ProvisionRequest(image: context.image)
        coldRequest.resources.memory = .mebibytes(256)
        for index in 0..<(runs + 1) {
            let (sandbox, elapsed) = try await measureMilliseconds {
                let sandbox = try await provisioner.provision(coldRequest)
                try await Self.executeTrue(sandbox)
                return sandbox
            }
            if index > 0 {
                cold.append(elapsed)
                coldReady.append(sandbox.provisioning?.totalMilliseconds ?? .nan)
            }
            try await sandbox.remove()
        }

        // The docker CLI doing the same: run -d, then exec true.
        var dockerCLI = Samples()
        let host = context.engineEndpoint.hasPrefix("unix://") ? context.engineEndpoint : nil
        for index in 0..<(runs + 1) {
            let name = "corral-bench-cli-\(getpid())-\(index)"
            let (_, elapsed) = try await measureMilliseconds {
                try Self.docker(
                    [
                        "run", "-d", "--name", name, "--network", "none", "--memory", "256m", "--label",
                        "corral-bench=1",
                        context.image, "sleep", "infinity",
                    ], host: host)
                try Self.docker(["exec", name, "true"], host: host)
            }
            if index > 0 { dockerCLI.append(elapsed) }
            _ = try? Self.docker(["rm", "-f", name], host: host)
        }

        let ratio50 = warm.median / cold.median
        let ratio95 = warm.p95 / cold.p95
        return SuiteReport(
            suite: Self.name,
            comparisons: [
                Comparison(
                    metric: "provision to first execute(true)",
                    measurements: [
                        Measurement(subject: "corral-warm", unit: "ms", samples: warm),
                        Measurement(subject: "corral-cold", unit: "ms", samples: cold),
                        Measurement(subject: "docker-cli run+exec", unit: "ms", samples: dockerCLI),
                    ],
                    targets: [
                        TargetCheck(
                            target: "warm p50 <= 60 ms", observed: String(format: "%.1f ms", warm.median),
                            met: warm.median <= 60),
                        TargetCheck(
                            target: "warm/cold p50 <= 0.3", observed: String(format: "%.3f", ratio50),
                            met: ratio50 <= 0.3),
                        TargetCheck(
                            target: "warm/cold p95 <= 0.2", observed: String(format: "%.3f", ratio95),
                            met: ratio95 <= 0.2),
                    ]),
                Comparison(
                    metric: "phases",
                    measurements: [
                        Measurement(subject: "corral-warm claim", unit: "ms", samples: warmClaim),
                        Measurement(subject: "corral-cold create+start", unit: "ms", samples: coldReady),
                        Measurement(subject: "execute(true) on a running sandbox", unit: "ms", samples: executeAgain),
                    ]),
                Comparison(
                    metric: "idle warm member memory (cgroup)",
                    measurements: [
                        Measurement(subject: "usage incl. page cache", unit: "MiB", samples: usage),
                        Measurement(subject: "rss", unit: "MiB", samples: rss),
                    ]),
            ],
            notes: [
                "warm: claimed from an in-process WarmPool (as corral serve runs it), pool full before each claim (min_idle 2)",
                "cold: create + start with the hardened default; docker CLI: docker run -d --network none, then docker exec",
                "density: \(members.count) idle members of \(context.image) (asked \(densityMembers)), filled in \(String(format: "%.1f", fillSeconds)) s at refill_concurrency 4",
                "runs: \(runs) each, after one or two warm-up runs not counted",
            ])
    }

    /// Waits, woken by the pool's own status updates, until `idle` members are idle and none
    /// is being made; fails when the pool keeps failing or `limit` passes.
    static func waitFor(_ pool: WarmPool, idle: Int, limit: Duration = .seconds(180)) async throws -> PoolStatus {
        try await withThrowingTaskGroup(of: PoolStatus?.self) { group in
            group.addTask {
                try await pool.waitForStatus { status in
                    (status.idle >= idle && status.preparing == 0)
                        || (status.state == .degraded && status.consecutiveFailures >= 3)
                }
            }
            group.addTask {
                try await Task.sleep(for: limit)  // the limit is the one wait by the clock
                return nil
            }
            defer { group.cancelAll() }
            guard let status = try await group.next() ?? nil else {
                throw CorralError(.timeout, "the bench pool did not reach \(idle) idle members in \(limit)")
            }
            if status.state == .degraded, status.idle < idle {
                throw CorralError(.engine, "the bench pool is degraded: \(status.lastError ?? "?")")
            }
            return status
        }
    }

    static func executeTrue(_ sandbox: Sandbox) async throws {
        let output = try await sandbox.execute(tool: "bash", input: ["command": "true"])
        guard !output.isError else { throw CorralError(.engine, "execute(true) failed: \(output.text)") }
    }

    /// Memory of a container from its cgroup (v1 or v2): usage, and rss where the kernel says.
    static func cgroupMemory(containerID: String) -> (usage: Int64, rss: Int64?)? {
        let v1 = "/sys/fs/cgroup/memory/docker/\(containerID)"
        if let usage = readInteger("\(v1)/memory.usage_in_bytes") {
            return (usage, statValue("\(v1)/memory.stat", key: "total_rss"))
        }
        for v2 in ["/sys/fs/cgroup/system.slice/docker-\(containerID).scope", "/sys/fs/cgroup/docker/\(containerID)"] {
            if let usage = readInteger("\(v2)/memory.current") {
                return (usage, statValue("\(v2)/memory.stat", key: "anon"))
            }
        }
        return nil
    }

    private static func readInteger(_ path: String) -> Int64? {
        (try? String(contentsOfFile: path, encoding: .utf8)).flatMap {
            Int64($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    private static func statValue(_ path: String, key: String) -> Int64? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, parts[0] == key { return Int64(parts[1]) }
        }
        return nil
    }

    @discardableResult
    static func docker(_ arguments: [String], host: String?) throws -> String {
        var environment = ProcessInfo.processInfo.environment
        if let host { environment["DOCKER_HOST"] = host }
        let output = try ChildProcess.run("/usr/bin/env", ["docker"] + arguments, environment: environment)
        let text = String(decoding: output.stdout, as: UTF8.self)
        guard output.termination.succeeded else {
            throw CorralError(
                .engine, "docker \(arguments.prefix(2).joined(separator: " ")) failed: \(output.reason)")
        }
        return text
    }

    /// Whatever a suite made, removed whatever happened: every container of its state
    /// directory's instance, and the docker CLI's.
    static func removeAll(engine: DockerEngineClient, state: URL) async {
        _ = try? await Provisioner.removeEverything(
            engine: engine, sandboxesDirectory: state.appendingPathComponent("sandboxes", isDirectory: true))
        for container in (try? await engine.listContainers(all: true, labels: ["corral-bench=1"])) ?? [] {
            _ = try? await engine.removeContainer(container.id, force: true, volumes: true)
        }
    }
}
