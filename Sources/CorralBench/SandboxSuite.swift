import CorralCore
import CorralSandbox
import CurlHTTP
import DockerEngine
import Foundation

/// Suite `sandbox`: cold provision and first exec, and the exec round trip of `true`, for
/// corral, raw engine API calls (the same requests, by hand) and the docker CLI; and the
/// control path's round trip of `true` on runc and gVisor beside the floor under it (fork,
/// exec and wait of /bin/true inside the sandbox).
struct SandboxSuite: BenchSuite {
    static let name = "sandbox"
    static let summary =
        "cold provision + first exec, and exec round trip; corral vs raw engine API vs docker CLI; the control path vs its floor"

    func run(_ context: BenchContext) async throws -> SuiteReport {
        let engine = try DockerEngineClient(parsing: context.engineEndpoint)
        defer { engine.shutdown() }
        let environment = SandboxEnvironment(initBinary: try SandboxEnvironment.locateInit())
        // `corral`: commands through the engine's exec, as a process that did not make the
        // sandbox runs them (like for like with raw-api). `corral-control`: the maker's own
        // control connection to corral-init, which needs a state directory for its socket.
        let provisioner = Provisioner(engine: engine, configuration: .init(environment: environment))
        let state = context.scratch.appendingPathComponent("sandbox-suite-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: state) }
        let controlled = Provisioner(
            engine: engine,
            configuration: .init(
                environment: SandboxEnvironment(
                    initBinary: environment.initBinary,
                    sandboxesDirectory: state.appendingPathComponent("sandboxes", isDirectory: true))))
        let raw = try RawEngine(endpoint: context.engineEndpoint, version: try await engine.apiVersion().description)
        defer { raw.http.shutdown() }
        let docker = DockerCLI(endpoint: context.engineEndpoint)
        var request = ProvisionRequest(image: context.image)
        request.labels["bench"] = "sandbox"
        request.ttl = .seconds(1800)
        let runs = context.quick ? min(context.runs, 5) : context.runs
        // The raw subject sends the very body corral sends for the same request.
        let shape = ContainerShape(
            image: request.image, runtime: request.runtime, resources: request.resources, env: request.env)

        // What the workspace's own file system costs: the same request with disk 0 (a plain
        // directory).
        var undisked = request
        undisked.resources.disk = ByteSize(bytes: 0)
        var corralCold = Samples(), corralFirst = Samples(), rawCold = Samples(), rawFirst = Samples()
        var cliCold = Samples(), cliFirst = Samples(), controlCold = Samples(), controlFirst = Samples()
        var noDiskCold = Samples()
        // Interleave subjects so drift on a shared machine hits all of them alike.
        for _ in 0..<runs {
            let (sandbox, cold) = try await measureMilliseconds { try await provisioner.provision(request) }
            let (_, first) = try await measureMilliseconds { try await sandbox.run(SandboxCommand(["true"])) }
            corralCold.append(cold)
            corralFirst.append(first)
            try await sandbox.remove()

            let (plain, plainCold) = try await measureMilliseconds { try await provisioner.provision(undisked) }
            noDiskCold.append(plainCold)
            try await plain.remove()

            let (held, heldCold) = try await measureMilliseconds { try await controlled.provision(request) }
            let (_, heldFirst) = try await measureMilliseconds { try await held.run(SandboxCommand(["true"])) }
            controlCold.append(heldCold)
            controlFirst.append(heldFirst)
            try await held.remove()

            // The raw subject's host files (workspace, passwd) are made outside the timing:
            // it measures the engine's part of the same request.
            let id = SandboxID.random()
            try await environment.prepareHostDirectory(for: id, disk: request.resources.disk)
            let spec = shape.containerSpec(
                sandbox: id, environment: environment, created: Date(), instance: "bench-raw")
            let (container, rawCreate) = try await measureMilliseconds { try await raw.createAndStart(spec) }
            let (_, rawExec) = try await measureMilliseconds { try await raw.exec(container, ["true"]) }
            rawCold.append(rawCreate)
            rawFirst.append(rawExec)
            _ = try await engine.removeContainer(container)
            environment.removeHostDirectory(for: id)

            let (cliContainer, cliRun) = try await measureMilliseconds {
                try docker.run(image: context.image, initBinary: environment.initBinary, request: request)
            }
            let (_, cliExec) = try await measureMilliseconds { try docker.exec(cliContainer, ["true"]) }
            cliCold.append(cliRun)
            cliFirst.append(cliExec)
            _ = try await engine.removeContainer(cliContainer)
        }

        // Exec round trips, in one long-lived sandbox per subject.
        let execRuns = context.quick ? 10 : max(runs, 50)
        var corralExec = Samples(), rawExecs = Samples(), cliExecs = Samples(), controlExecs = Samples()
        let sandbox = try await provisioner.provision(request)
        let held = try await controlled.provision(request)
        let rawID = SandboxID.random()
        try await environment.prepareHostDirectory(for: rawID, disk: request.resources.disk)
        defer { environment.removeHostDirectory(for: rawID) }
        let spec = shape.containerSpec(
            sandbox: rawID, environment: environment, created: Date(), instance: "bench-raw")
        let rawContainer = try await raw.createAndStart(spec)
        let cliContainer = try docker.run(image: context.image, initBinary: environment.initBinary, request: request)
        for _ in 0..<execRuns {
            corralExec.append(try await measureMilliseconds { try await sandbox.run(SandboxCommand(["true"])) }.1)
            rawExecs.append(try await measureMilliseconds { try await raw.exec(rawContainer, ["true"]) }.1)
            cliExecs.append(try await measureMilliseconds { try docker.exec(cliContainer, ["true"]) }.1)
            controlExecs.append(try await measureMilliseconds { try await held.run(SandboxCommand(["true"])) }.1)
        }
        try await sandbox.remove()
        _ = try await engine.removeContainer(rawContainer)
        _ = try await engine.removeContainer(cliContainer)

        // The control path beside its floor, on each runtime: the round trip of `true` over the
        // control connection, and fork+exec+wait of /bin/true inside the same sandbox (timed by
        // corral-init itself, started through the engine's exec so that the control
        // connection is idle meanwhile).
        var gvisor = request
        gvisor.runtime = .runsc
        let heldGVisor = try await controlled.provision(gvisor)
        var controlPath: [(SandboxRuntime, control: Samples, floor: Samples)] = []
        for (runtime, subject) in [(SandboxRuntime.runc, held), (.runsc, heldGVisor)] {
            var control = Samples()
            for _ in 0..<max(execRuns, 200) {
                control.append(try await measureMilliseconds { try await subject.run(SandboxCommand(["true"])) }.1)
            }
            let floor = try await spawnFloor(in: provisioner.handle(subject.id), runs: context.quick ? 50 : 500)
            controlPath.append((runtime, control, floor))
        }
        try await held.remove()
        try await heldGVisor.remove()

        func ratio(_ a: Samples, _ b: Samples) -> Double { a.median / b.median }
        var controlMeasurements: [Measurement] = []
        var controlTargets: [TargetCheck] = []
        for (runtime, control, floor) in controlPath {
            controlMeasurements.append(Measurement(subject: "corral-control, \(runtime)", unit: "ms", samples: control))
            controlMeasurements.append(
                Measurement(subject: "fork+exec+wait floor, \(runtime)", unit: "ms", samples: floor))
            controlTargets.append(
                TargetCheck(
                    target: "\(runtime): control path p50 <= 1.5 ms",
                    observed: String(format: "%.3f ms", control.median), met: control.median <= 1.5))
            controlTargets.append(
                TargetCheck(
                    target: "\(runtime): moonshot, control path p50 <= floor + 0.5 ms",
                    observed: String(format: "%.3f vs %.3f + 0.5 ms", control.median, floor.median),
                    met: control.median <= floor.median + 0.5))
        }
        let coldRatio = ratio(corralCold, rawCold)
        let execRatio = ratio(corralExec, rawExecs)
        return SuiteReport(
            suite: Self.name,
            comparisons: [
                Comparison(
                    metric: "cold provision (create+start)",
                    measurements: [
                        Measurement(subject: "corral", unit: "ms", samples: corralCold),
                        Measurement(subject: "raw-api", unit: "ms", samples: rawCold),
                        Measurement(subject: "docker-cli run -d", unit: "ms", samples: cliCold),
                        Measurement(subject: "corral-control", unit: "ms", samples: controlCold),
                        Measurement(subject: "corral, disk 0", unit: "ms", samples: noDiskCold),
                    ],
                    targets: [
                        TargetCheck(
                            target: "corral p50 within 1.15x of raw API", observed: String(format: "%.2fx", coldRatio),
                            met: coldRatio <= 1.15)
                    ]),
                Comparison(
                    metric: "first exec after provision",
                    measurements: [
                        Measurement(subject: "corral", unit: "ms", samples: corralFirst),
                        Measurement(subject: "raw-api", unit: "ms", samples: rawFirst),
                        Measurement(subject: "docker-cli exec", unit: "ms", samples: cliFirst),
                        Measurement(subject: "corral-control", unit: "ms", samples: controlFirst),
                    ]),
                Comparison(
                    metric: "exec round trip of true",
                    measurements: [
                        Measurement(subject: "corral", unit: "ms", samples: corralExec),
                        Measurement(subject: "raw-api", unit: "ms", samples: rawExecs),
                        Measurement(subject: "docker-cli exec", unit: "ms", samples: cliExecs),
                        Measurement(subject: "corral-control", unit: "ms", samples: controlExecs),
                    ],
                    targets: [
                        TargetCheck(
                            target: "corral p50 within 1.15x of raw API", observed: String(format: "%.2fx", execRatio),
                            met: execRatio <= 1.15),
                        TargetCheck(
                            target: "corral faster than the docker CLI at p50",
                            observed: String(format: "%.1f vs %.1f ms", corralExec.median, cliExecs.median),
                            met: corralExec.median < cliExecs.median),
                    ]),
                Comparison(
                    metric: "control path: true vs the floor", measurements: controlMeasurements,
                    targets: controlTargets),
            ],
            notes: [
                "raw-api sends the same create body corral does, over libcurl, with no wrapper; its exec runs `true` directly, while corral's runs it under corral-init's exec wrapper (process-group timeout)",
                "docker-cli uses the same hardened flags; each call pays the CLI's own start-up",
                "corral makes the workspace's own ext4 file system (mkfs, loop mount) before the engine is asked; `corral, disk 0` is the same request with a plain directory, so the difference is what the disk costs; raw-api's host files are made outside its timing",
                "corral-control: the provisioning process's control connection to corral-init (a state directory is needed); its cold provision includes waiting for corral-init to dial in",
                "fork+exec+wait floor: `corral-init spawn-floor` inside the sandbox starts /bin/true the way corral-init starts commands (vfork, a session of its own, exec) and waits for it, timing each cycle itself; the gap to corral-control is the protocol, the host and the connection",
            ])
    }

    /// The floor under a command in `sandbox`: corral-init's own timings of fork+exec+wait of
    /// /bin/true, in milliseconds.
    private func spawnFloor(in sandbox: Sandbox, runs: Int) async throws -> Samples {
        let result = try await sandbox.run(
            SandboxCommand([SandboxEnvironment.initPath, "spawn-floor", String(runs)], timeout: .seconds(120)))
        struct Report: Decodable {
            var samplesMicroseconds: [Double]
            enum CodingKeys: String, CodingKey { case samplesMicroseconds = "samples_us" }
        }
        guard result.status.exitCode == 0,
            let report = try? JSONDecoder().decode(Report.self, from: Data(result.stdout.utf8))
        else {
            throw CorralError(
                .engine,
                "corral-init spawn-floor failed (status \(result.status.exitCode)): \(result.stderr.prefix(200))")
        }
        return Samples(report.samplesMicroseconds.map { $0 / 1000 })
    }
}

/// The engine API driven by hand, as a careful user of curl would.
struct RawEngine {
    let http: CurlHTTPClient
    let prefix: String

    init(endpoint: String, version: String) throws {
        http = try CurlHTTPClient(endpoint: HTTPEndpoint(parsing: endpoint))
        prefix = "/v\(version)"
    }

    func createAndStart(_ spec: ContainerCreateRequest) async throws -> String {
        let body = try JSONEncoder().encode(spec)
        let created = try await http.execute(
            HTTPRequest(
                .post, "\(prefix)/containers/create", headers: ["Content-Type": "application/json"],
                body: .bytes(Array(body))))
        guard created.status == 201,
            let id = try JSONDecoder().decode(JSONValue.self, from: Data(created.body))["Id"]?.stringValue
        else {
            throw CorralError(.engine, "raw create failed: \(created.bodyText)")
        }
        let started = try await http.execute(HTTPRequest(.post, "\(prefix)/containers/\(id)/start"))
        guard started.status == 204 else { throw CorralError(.engine, "raw start failed: \(started.bodyText)") }
        return id
    }

    func exec(_ container: String, _ command: [String]) async throws {
        let body = try JSONEncoder().encode([
            "Cmd": JSONValue.array(command.map { .string($0) }), "AttachStdout": true, "AttachStderr": true,
            "User": "1000:1000",
        ])
        let created = try await http.execute(
            HTTPRequest(
                .post, "\(prefix)/containers/\(container)/exec", headers: ["Content-Type": "application/json"],
                body: .bytes(Array(body))))
        guard let id = try JSONDecoder().decode(JSONValue.self, from: Data(created.body))["Id"]?.stringValue else {
            throw CorralError(.engine, "raw exec create failed: \(created.bodyText)")
        }
        _ = try await http.execute(
            HTTPRequest(
                .post, "\(prefix)/exec/\(id)/start", headers: ["Content-Type": "application/json"],
                body: .bytes(Array(#"{"Detach":false,"Tty":false}"#.utf8)), forbidReuse: true))
        while true {
            let inspect = try await http.execute(HTTPRequest(.get, "\(prefix)/exec/\(id)/json"))
            if try JSONDecoder().decode(JSONValue.self, from: Data(inspect.body))["ExitCode"]?.intValue != nil {
                return
            }
        }
    }
}

/// The docker command line, with the same hardened flags corral uses.
struct DockerCLI {
    let endpoint: String

    func run(image: String, initBinary: String, request: ProvisionRequest) throws -> String {
        let arguments = [
            "run", "-d", "--network", "none", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--read-only",
            "--user", "1000:1000", "--workdir", "/workspace", "--tmpfs", "/tmp:rw,nosuid,nodev,mode=1777",
            "--mount", "type=volume,dst=/workspace", "--mount",
            "type=bind,src=\(initBinary),dst=/.corral/init,readonly",
            "--pids-limit", "\(request.resources.pids)", "--memory", "\(request.resources.memory.bytes)",
            "--memory-swap", "\(request.resources.memory.bytes)", "--cpus", "\(request.resources.cpus)",
            "--log-driver", "none", "--label", "corral.managed=1", "--label", "corral.bench=docker-cli",
            "--entrypoint", "/.corral/init", image,
        ]
        return try invoke(arguments).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func exec(_ container: String, _ command: [String]) throws {
        _ = try invoke(["exec", "--user", "1000:1000", container] + command)
    }

    private func invoke(_ arguments: [String]) throws -> String {
        try ProvisionSuite.docker(arguments, host: endpoint)
    }
}
