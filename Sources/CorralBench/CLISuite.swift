import CorralCore
import CorralSandbox
import DockerEngine
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Suite `cli`: what a person or a CI job feels, end to end, process start included: the
/// built `corral` beside the docker CLI, measured in the same run.
struct CLISuite: BenchSuite {
    static let name = "cli"
    static let summary = "corral commands end to end (process start included) vs the docker CLI"

    func run(_ context: BenchContext) async throws -> SuiteReport {
        let corral = BenchProcess.sibling("corral")
        guard FileManager.default.isExecutableFile(atPath: corral) else {
            throw CorralError(.notFound, "no corral beside corral-bench at \(corral)", hint: "swift build -c release")
        }
        let docker = try BenchProcess.which("docker")
        let runs = context.quick ? min(context.runs, 5) : context.runs
        let root = context.scratch.appendingPathComponent("cli-suite-\(UUID().uuidString.prefix(8))")
        let serviceState = root.appendingPathComponent("service")
        let agentState = root.appendingPathComponent("agent")
        for directory in [serviceState, agentState] {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        }
        let config = root.appendingPathComponent("corral.toml")
        try Data(
            """
            [[templates]]
            name = "bench"
            image = "\(context.image)"
            memory = "256m"
            [templates.pool]
            min_idle = 3
            max_total = 8
            refill_concurrency = 2

            """.utf8
        ).write(to: config)
        var base = ProcessInfo.processInfo.environment
        base["CORRAL_ENGINE"] = context.engineEndpoint
        base["CORRAL_CONFIG"] = ""
        base["CORRAL_LOG"] = "error"
        var serviceEnvironment = base
        serviceEnvironment["CORRAL_STATE_DIR"] = serviceState.path
        serviceEnvironment["CORRAL_AGENT"] = "0"
        var agentEnvironment = base
        agentEnvironment["CORRAL_STATE_DIR"] = agentState.path
        agentEnvironment["CORRAL_AGENT"] = "1"
        agentEnvironment["CORRAL_AGENT_IDLE"] = "10m"
        var embeddedEnvironment = agentEnvironment
        embeddedEnvironment["CORRAL_AGENT"] = "0"
        var dockerEnvironment = base
        dockerEnvironment["DOCKER_HOST"] = context.engineEndpoint

        // A service of its own, with a warm pool, on the unix socket only.
        let service = try BenchProcess.start(
            corral, ["serve", "--listen", "", "--config", config.path], environment: serviceEnvironment,
            log: root.appendingPathComponent("serve.log"))
        do {
            let report = try await measure(
                context, corral: corral, docker: docker, runs: runs, root: root, base: base,
                serviceEnvironment: serviceEnvironment, agentEnvironment: agentEnvironment,
                embeddedEnvironment: embeddedEnvironment, dockerEnvironment: dockerEnvironment)
            await Self.tearDown(service: service, states: [serviceState, agentState], engine: context.engineEndpoint)
            return report
        } catch {
            await Self.tearDown(service: service, states: [serviceState, agentState], engine: context.engineEndpoint)
            throw error
        }
    }

    /// Stops the service and the agent (its socket removed), then removes every container
    /// either state directory made, pool members included, with their workspaces.
    static func tearDown(service: ChildProcess?, states: [URL], engine: String) async {
        if let service { BenchProcess.stop(service) }
        for state in states { try? FileManager.default.removeItem(at: state.appendingPathComponent("corral.sock")) }
        guard let client = try? DockerEngineClient(parsing: engine) else { return }
        defer { client.shutdown() }
        for state in states {
            _ = try? await Provisioner.removeEverything(
                engine: client, sandboxesDirectory: state.appendingPathComponent("sandboxes"))
        }
    }

    private func measure(
        _ context: BenchContext, corral: String, docker: String, runs: Int, root: URL, base: [String: String],
        serviceEnvironment: [String: String], agentEnvironment: [String: String],
        embeddedEnvironment: [String: String], dockerEnvironment: [String: String]
    ) async throws -> SuiteReport {
        let serviceState = root.appendingPathComponent("service")
        try await BenchProcess.waitForSocket(serviceState.appendingPathComponent("corral.sock").path)

        // Start-up.
        var corralVersion = Samples(), dockerVersion = Samples()
        for _ in 0..<max(runs, 30) {
            corralVersion.append(try BenchProcess.time(corral, ["--version"], environment: base))
            dockerVersion.append(try BenchProcess.time(docker, ["--version"], environment: dockerEnvironment))
        }

        // A sandbox through the service, one through the agent, and the docker CLI's container.
        let serviceSandbox = try BenchProcess.output(
            corral, ["sandbox", "create", "--memory", "256m"], environment: serviceEnvironment)
        let (agentSandbox, agentFirst) = try BenchProcess.timedOutput(
            corral, ["sandbox", "create", "--memory", "256m"], environment: agentEnvironment)
        let user = "\(SandboxUser(for: try SandboxID(validating: serviceSandbox)))"
        let container = try BenchProcess.output(
            docker,
            [
                "run", "-d", "--network", "none", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "--read-only", "--user", user, "--tmpfs", "/tmp:rw,nosuid,nodev,mode=1777", "--mount",
                "type=volume,dst=/workspace", "--memory", "256m", "--label", "corral.bench=cli", "--entrypoint",
                "sleep", context.image, "infinity",
            ], environment: dockerEnvironment)
        defer {
            _ = try? BenchProcess.output(docker, ["rm", "-f", "-v", container], environment: dockerEnvironment)
        }

        // The order turns each round: whatever runs right after `docker exec` shares the CPU
        // with the engine's clean-up of that exec, and no subject should always be the one.
        var serviceExec = Samples(), agentExec = Samples(), embeddedExec = Samples(), dockerExec = Samples()
        for index in 0..<max(runs, 30) {
            var turns: [() throws -> Void] = [
                {
                    serviceExec.append(
                        try BenchProcess.time(
                            corral, ["exec", serviceSandbox, "--", "true"], environment: serviceEnvironment))
                },
                {
                    agentExec.append(
                        try BenchProcess.time(
                            corral, ["exec", agentSandbox, "--", "true"], environment: agentEnvironment))
                },
                {
                    dockerExec.append(
                        try BenchProcess.time(docker, ["exec", container, "true"], environment: dockerEnvironment))
                },
            ]
            if index < 10 {
                turns.append {
                    embeddedExec.append(
                        try BenchProcess.time(
                            corral, ["exec", agentSandbox, "--", "true"], environment: embeddedEnvironment))
                }
            }
            for turn in 0..<turns.count { try turns[(index + turn) % turns.count]() }
        }

        // Warm creates through the service. Settled: each waits until the pool is full and makes
        // nothing, so that the claim is timed alone. Refilling: each waits only for an idle
        // member, so that the engine is still starting the last claim's replacement, as when
        // creates come back to back.
        var warmCreate = Samples(), refillingCreate = Samples()
        var coldCreates = 0
        for round in 0..<(context.quick ? 6 : 30) {
            let settled = round % 2 == 0
            try await BenchProcess.waitForIdle(
                corral, template: "bench", settled: settled, environment: serviceEnvironment)
            let (created, elapsed) = try BenchProcess.timedOutput(
                corral, ["sandbox", "create", "--template", "bench", "--json"], environment: serviceEnvironment)
            let answer = try JSONDecoder().decode(JSONValue.self, from: Data(created.utf8))
            if answer["path"]?.stringValue != "warm" {
                coldCreates += 1
            } else if settled {
                warmCreate.append(elapsed)
            } else {
                refillingCreate.append(elapsed)
            }
            if let id = answer["id"]?.stringValue {
                _ = try BenchProcess.output(corral, ["sandbox", "rm", id], environment: serviceEnvironment)
            }
        }

        // Copies of 10 MB each way.
        let file = root.appendingPathComponent("ten.bin")
        try Data((0..<(10 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }).write(to: file)
        let back = root.appendingPathComponent("back.bin")
        var corralIn = Samples(), corralOut = Samples(), dockerIn = Samples(), dockerOut = Samples()
        for _ in 0..<(context.quick ? 3 : 10) {
            corralIn.append(
                try BenchProcess.time(
                    corral, ["cp", file.path, "\(serviceSandbox):/workspace/ten.bin"], environment: serviceEnvironment))
            try? FileManager.default.removeItem(at: back)
            corralOut.append(
                try BenchProcess.time(
                    corral, ["cp", "\(serviceSandbox):/workspace/ten.bin", back.path], environment: serviceEnvironment))
            dockerIn.append(
                try BenchProcess.time(
                    docker, ["cp", file.path, "\(container):/workspace/ten.bin"], environment: dockerEnvironment))
            try? FileManager.default.removeItem(at: back)
            dockerOut.append(
                try BenchProcess.time(
                    docker, ["cp", "\(container):/workspace/ten.bin", back.path], environment: dockerEnvironment))
        }

        _ = try? BenchProcess.output(corral, ["sandbox", "rm", serviceSandbox], environment: serviceEnvironment)
        _ = try? BenchProcess.output(corral, ["sandbox", "rm", agentSandbox], environment: agentEnvironment)

        let noServiceRatio = agentExec.median / dockerExec.median
        return SuiteReport(
            suite: Self.name,
            comparisons: [
                Comparison(
                    metric: "start-up: --version",
                    measurements: [
                        Measurement(subject: "corral", unit: "ms", samples: corralVersion),
                        Measurement(subject: "docker", unit: "ms", samples: dockerVersion),
                    ],
                    targets: [
                        TargetCheck(
                            target: "corral --version p50 <= 5 ms",
                            observed: String(format: "%.1f ms", corralVersion.median), met: corralVersion.median <= 5)
                    ]),
                Comparison(
                    metric: "exec true, end to end",
                    measurements: [
                        Measurement(subject: "corral, service", unit: "ms", samples: serviceExec),
                        Measurement(subject: "corral, agent", unit: "ms", samples: agentExec),
                        Measurement(subject: "corral, CORRAL_AGENT=0", unit: "ms", samples: embeddedExec),
                        Measurement(subject: "docker exec", unit: "ms", samples: dockerExec),
                    ],
                    targets: [
                        TargetCheck(
                            target: "with a service p50 <= 10 ms",
                            observed: String(format: "%.1f ms", serviceExec.median), met: serviceExec.median <= 10),
                        TargetCheck(
                            target: "without a service (agent) p50 <= 0.8x docker exec",
                            observed: String(format: "%.2fx", noServiceRatio), met: noServiceRatio <= 0.8),
                    ]),
                Comparison(
                    metric: "sandbox create",
                    measurements: [
                        Measurement(subject: "corral warm, service, pool settled", unit: "ms", samples: warmCreate),
                        Measurement(
                            subject: "corral warm, service, pool refilling", unit: "ms", samples: refillingCreate),
                        Measurement(
                            subject: "corral cold, first command (agent start)", unit: "ms",
                            samples: Samples([agentFirst])),
                    ],
                    targets: [
                        TargetCheck(
                            target: "warm create p50 <= 20 ms",
                            observed: String(format: "%.1f ms (%d cold)", warmCreate.median, coldCreates),
                            met: warmCreate.median <= 20)
                    ]),
                Comparison(
                    metric: "cp 10 MB",
                    measurements: [
                        Measurement(subject: "corral in", unit: "ms", samples: corralIn),
                        Measurement(subject: "docker cp in", unit: "ms", samples: dockerIn),
                        Measurement(subject: "corral out", unit: "ms", samples: corralOut),
                        Measurement(subject: "docker cp out", unit: "ms", samples: dockerOut),
                    ]),
            ],
            notes: [
                "every figure is a whole process, spawned and waited for (posix_spawn, output to /dev/null)",
                "service: `corral serve` on the unix socket; agent: the host agent the first command started (its start is the 'first command' figure); CORRAL_AGENT=0: the command drives the engine itself (the engine's exec)",
                "docker exec runs `true` directly in a container started with the same hardening; corral's runs under corral-init",
                "exec rounds run the subjects in a turning order, so that none always follows docker exec (whose clean-up in the engine overlaps the next command)",
                "warm creates: 'settled' ones wait until the pool is full again and starts nothing (the target is theirs), 'refilling' ones only for an idle member, while the engine still starts the previous claim's replacement; creates that found no idle member are counted as cold, not timed",
            ])
    }
}

/// Spawning processes for the suite: ChildProcess (posix_spawn and waitpid), so that what is
/// timed is the command, not Foundation's process machinery.
enum BenchProcess {
    static func sibling(_ name: String) -> String {
        let executable =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent(name).path
    }

    static func which(_ name: String) throws -> String {
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw CorralError(.notFound, "\(name) is not on PATH", hint: "apt-get install docker.io")
    }

    /// Runs to completion; the wall time in milliseconds. Throws on a non-zero exit.
    static func time(_ path: String, _ arguments: [String], environment: [String: String]) throws -> Double {
        try timedRun(path, arguments, environment: environment, output: nil).1
    }

    static func output(_ path: String, _ arguments: [String], environment: [String: String]) throws -> String {
        try timedOutput(path, arguments, environment: environment).0
    }

    static func timedOutput(_ path: String, _ arguments: [String], environment: [String: String]) throws -> (
        String, Double
    ) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("corral-bench-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        let (_, elapsed) = try timedRun(path, arguments, environment: environment, output: file.path)
        let text = (try? String(contentsOf: file, encoding: .utf8)) ?? ""
        return (text.trimmingCharacters(in: .whitespacesAndNewlines), elapsed)
    }

    private static func timedRun(
        _ path: String, _ arguments: [String], environment: [String: String], output: String?
    ) throws -> (Int32, Double) {
        let out = output.map { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) }
        if let out, out < 0 {
            throw CorralError(.io, "cannot open \(output ?? ""): \(String(cString: strerror(errno)))")
        }
        defer { if let out { close(out) } }
        let clock = ContinuousClock()
        let started = clock.now
        let child = try ChildProcess.spawn(path, arguments, environment: environment, stdout: out)
        let termination = child.wait()
        let elapsed = (clock.now - started).benchMilliseconds
        let exited = termination.code ?? 128 + termination.status
        guard exited == 0 else {
            throw CorralError(
                .engine,
                "\(URL(fileURLWithPath: path).lastPathComponent) \(arguments.prefix(3).joined(separator: " ")) exited with \(exited)"
            )
        }
        return (exited, elapsed)
    }

    /// A long-running process (a service), its output to `log`.
    static func start(_ path: String, _ arguments: [String], environment: [String: String], log: URL) throws
        -> ChildProcess
    {
        guard FileManager.default.createFile(atPath: log.path, contents: nil) else {
            throw CorralError(.io, "cannot create \(log.path)")
        }
        let handle = try FileHandle(forWritingTo: log)
        defer { try? handle.close() }
        return try ChildProcess.spawn(
            path, arguments, environment: environment, stdout: handle.fileDescriptor, stderr: handle.fileDescriptor)
    }

    /// A free loopback port: bound, read, released.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CorralError(.io, "socket failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else { throw CorralError(.io, "bind failed") }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: actual.sin_port))
    }

    static func stop(_ process: ChildProcess) {
        process.signal(SIGTERM)
        process.wait()
    }

    static func waitForSocket(_ path: String) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while !UnixSocketPath.accepts(path) {
            guard ContinuousClock.now < deadline else {
                throw CorralError(.timeout, "no service answered on \(path) within 60 s")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Waits until `corral pool ls --json` shows an idle member of `template`.
    /// Waits until the pool of `template` has an idle member; when `settled`, until it has all
    /// it should (`min_idle`) and is making none.
    static func waitForIdle(_ corral: String, template: String, settled: Bool = false, environment: [String: String])
        async throws
    {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            let listed = try output(corral, ["pool", "ls", "--json"], environment: environment)
            let pools = (try? JSONDecoder().decode([JSONValue].self, from: Data(listed.utf8))) ?? []
            if pools.contains(where: { pool in
                let idle = pool["counts"]?["idle"]?.intValue ?? 0
                let ready =
                    settled
                    ? idle >= (pool["minIdle"]?.intValue ?? 1) && (pool["counts"]?["preparing"]?.intValue ?? 0) == 0
                    : idle > 0
                return pool["template"]?.stringValue == template && ready
            }) {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CorralError(.timeout, "the pool of \(template) had no idle member within 120 s")
    }
}
