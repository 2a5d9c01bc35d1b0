import CorralCore
import CorralGateway
import CorralSandbox
import CorralService
import DockerEngine
import Foundation
import Logging
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Suite `workspace`: a repository of 1,000 files and 20 MB, served by git smart-HTTP on
/// loopback (`git http-backend`, demanding a token, as the tests' upstream does).
///
/// - Provision from a warm pool with the repository, to the first `execute("bash", "true")`,
///   beside `git clone` of the same repository on the host, straight from the upstream.
/// - Clone throughput: through the gateway (from inside a sandbox, and from the host through
///   corral-init's forwarder, the same path without the container) beside the host's direct
///   clone, all into a directory on disk.
///
/// The service is built as `corral serve` builds it (`CorralServiceRunner`), with the token in
/// its vault and nowhere else.
struct WorkspaceSuite: BenchSuite {
    static let name = "workspace"
    static let summary =
        "warm provision with a 1,000-file 20 MB repository to first execute, beside host git clone; clone through the gateway vs direct"

    func run(_ context: BenchContext) async throws -> SuiteReport {
        let engine = try DockerEngineClient(parsing: context.engineEndpoint)
        defer { engine.shutdown() }
        // Short: a sandbox's socket path must stay under 108 bytes.
        let directory = URL(fileURLWithPath: "/tmp/cb-ws-\(getpid())", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let state = directory.appendingPathComponent("state", isDirectory: true)
        do {
            let report = try await measure(context, engine: engine, directory: directory, state: state)
            await ProvisionSuite.removeAll(engine: engine, state: state)
            return report
        } catch {
            await ProvisionSuite.removeAll(engine: engine, state: state)
            throw error
        }
    }

    private func measure(_ context: BenchContext, engine: DockerEngineClient, directory: URL, state: URL)
        async throws -> SuiteReport
    {
        let files = context.quick ? 100 : 1000
        let fileBytes = 20 * 1024
        let provisionRuns = context.quick ? 3 : max(context.runs, 20)
        let cloneRuns = context.quick ? 3 : max(context.runs / 2, 10)

        // The upstream and its repository: random text, so that packs do not shrink to nothing.
        let token = "bench_\(UUID().uuidString)"
        let upstream = try GitHTTPServer(root: directory.appendingPathComponent("upstream"), tokens: [token])
        defer { upstream.stop() }
        var contents: [String: String] = [:]
        for index in 0..<files {
            let bytes = (0..<(fileBytes * 3 / 4)).map { _ in UInt8.random(in: 0...255) }
            contents["src/\(index / 100)/file\(index).txt"] = Data(bytes).base64EncodedString(
                options: .lineLength76Characters)
        }
        let treeBytes = contents.values.reduce(0) { $0 + $1.utf8.count }
        let bare = try upstream.createRepository(owner: "bench", name: "big", files: contents)
        let packBytes = Self.directorySize(bare.appendingPathComponent("objects"))
        let repository = "127.0.0.1:\(upstream.port)/bench/big"

        let vault = try await Vault(configuration: Vault.Configuration(stateDirectory: state, environment: [:]))
        try await vault.put(
            name: "bench", scope: CredentialScope(parsing: "127.0.0.1:\(upstream.port)/bench"),
            secret: VaultSecret(token))
        var template = SandboxTemplate(name: TemplateName(unchecked: "bench-ws"), image: context.image)
        template.resources.memory = .gibibytes(1)
        template.resources.cpus = 2
        template.pool.minIdle = 2
        template.pool.maxTotal = 6
        var configuration = CorralConfiguration()
        configuration.templates = [template]
        configuration.service.checkInterval = .seconds(1)
        var logger = Logger(label: "corral.bench")
        logger.logLevel = .warning
        let runner = try await CorralServiceRunner.prepare(
            configuration: configuration, engine: engine,
            environment: SandboxEnvironment(
                initBinary: try SandboxEnvironment.locateInit(),
                sandboxesDirectory: state.appendingPathComponent("sandboxes", isDirectory: true)),
            vault: vault, logger: logger)
        let service = Task { try await runner.run(handleSignals: false) }
        defer { service.cancel() }
        guard let pool = runner.pools.first else { throw CorralError(.internalError, "the bench template has no pool") }
        let provisioner = runner.provisioner
        var request = ProvisionRequest()
        request.template = template.name
        request.workspace = try SandboxWorkspace(repository: repository)

        // Warm provision with the repository, to the first execute.
        var provision = Samples()
        var workspacePhase = Samples()
        var claimPhase = Samples()
        for index in 0..<(provisionRuns + 1) {
            _ = try await ProvisionSuite.waitFor(pool, idle: template.pool.minIdle)
            let (sandbox, elapsed) = try await measureMilliseconds {
                let sandbox = try await provisioner.provision(request)
                try await ProvisionSuite.executeTrue(sandbox)
                return sandbox
            }
            guard sandbox.provisioning?.path == .warm else {
                throw CorralError(.internalError, "a claim with a full pool went cold")
            }
            if index > 0 {  // the first run warms connections and the page cache
                provision.append(elapsed)
                workspacePhase.append(sandbox.provisioning?.phases["workspace"] ?? .nan)
                claimPhase.append(sandbox.provisioning?.phases["claim"] ?? .nan)
            }
            try await sandbox.remove()
        }

        // Clones: direct from the host, through the gateway from the host (corral-init's
        // forwarder on a loopback port, to the sandbox's own socket), and from inside.
        _ = try await ProvisionSuite.waitFor(pool, idle: template.pool.minIdle)
        let sandbox = try await provisioner.provision(request)
        let socket = try Self.socketPath(provisioner, sandbox)
        let forwarder = try await HostForwarder.start(socket: socket)
        defer { forwarder.stop() }
        let hostTarget = directory.appendingPathComponent("clone")
        let direct = Self.directEnvironment(token: token)
        var hostDirect = Samples()
        var hostGateway = Samples()
        var inSandbox = Samples()
        for index in 0..<(cloneRuns + 1) {
            // Interleaved, so that drift on a shared machine hits every subject alike.
            try? FileManager.default.removeItem(at: hostTarget)
            let directMs = try Self.timeGit(
                ["clone", "--quiet", "http://\(repository).git", hostTarget.path], environment: direct)
            try? FileManager.default.removeItem(at: hostTarget)
            let viaGatewayMs = try Self.timeGit(
                [
                    "-c", "http.proxy=http://127.0.0.1:\(forwarder.port)", "clone", "--quiet",
                    "http://git.corral/\(repository).git", hostTarget.path,
                ], environment: Self.plainEnvironment)
            let insideMs = try await Self.cloneInside(sandbox, repository: repository)
            if index > 0 {
                hostDirect.append(directMs)
                hostGateway.append(viaGatewayMs)
                inSandbox.append(insideMs)
            }
        }
        try? FileManager.default.removeItem(at: hostTarget)
        try await sandbox.remove()
        service.cancel()
        _ = try? await service.value

        func throughput(_ samples: Samples) -> Samples {
            Samples(samples.values.map { Double(treeBytes) / 1e6 / ($0 / 1000) })
        }
        let ratioInside = hostDirect.median / inSandbox.median
        let ratioHost = hostDirect.median / hostGateway.median
        let megabytes = { (bytes: Int64) in String(format: "%.1f MB", Double(bytes) / 1e6) }
        return SuiteReport(
            suite: Self.name,
            comparisons: [
                Comparison(
                    metric: "warm provision with the repository to first execute(true)",
                    measurements: [
                        Measurement(subject: "corral-warm + clone", unit: "ms", samples: provision),
                        Measurement(subject: "host git clone (direct)", unit: "ms", samples: hostDirect),
                    ]),
                Comparison(
                    metric: "phases",
                    measurements: [
                        Measurement(subject: "claim", unit: "ms", samples: claimPhase),
                        Measurement(subject: "workspace (attach + clone)", unit: "ms", samples: workspacePhase),
                    ]),
                Comparison(
                    metric: "git clone",
                    measurements: [
                        Measurement(subject: "host, direct", unit: "ms", samples: hostDirect),
                        Measurement(subject: "host, through the gateway", unit: "ms", samples: hostGateway),
                        Measurement(subject: "sandbox, through the gateway", unit: "ms", samples: inSandbox),
                    ]),
                Comparison(
                    metric: "clone throughput (work tree bytes / time)",
                    measurements: [
                        Measurement(subject: "host, direct", unit: "MB/s", samples: throughput(hostDirect)),
                        Measurement(
                            subject: "host, through the gateway", unit: "MB/s", samples: throughput(hostGateway)),
                        Measurement(
                            subject: "sandbox, through the gateway", unit: "MB/s", samples: throughput(inSandbox)),
                    ],
                    targets: [
                        TargetCheck(
                            target: "sandbox through the gateway / host direct >= 0.8 (p50)",
                            observed: String(format: "%.2f", ratioInside), met: ratioInside >= 0.8),
                        TargetCheck(
                            target: "host through the gateway / host direct >= 0.8 (p50)",
                            observed: String(format: "%.2f", ratioHost), met: ratioHost >= 0.8),
                    ]),
            ],
            notes: [
                "repository: \(files) files, \(megabytes(Int64(treeBytes))) work tree, \(megabytes(packBytes)) of objects upstream; served by git http-backend on loopback, demanding a token",
                "upstream: a CGI process per request that builds the pack and buffers the answer; every subject pays it alike",
                "warm: template with 2 cpus, 1g, min_idle 2, pool full before each claim; the repository is cloned after the claim (late-bound)",
                "clones go to disk: the host's scratch directory, the sandbox's /workspace volume; timed around git alone (inside: date +%s%N in the sandbox)",
                "runs: \(provisionRuns) provisions, \(cloneRuns) clones per subject, after one warm-up run not counted",
            ])
    }

    // MARK: Helpers

    static func socketPath(_ provisioner: Provisioner, _ sandbox: Sandbox) throws -> String {
        guard let directory = provisioner.configuration.environment.gatewayDirectory(for: sandbox.id) else {
            throw CorralError(.internalError, "the bench provisioner has no state directory")
        }
        return directory.appendingPathComponent("gateway.sock").path
    }

    /// Clones into the sandbox's /workspace volume; milliseconds as the sandbox's clock says.
    static func cloneInside(_ sandbox: Sandbox, repository: String) async throws -> Double {
        let script = """
            rm -rf /workspace/.bench-clone
            start=$(date +%s%N)
            git clone --quiet http://git.corral/\(repository).git /workspace/.bench-clone || exit 1
            end=$(date +%s%N)
            echo $(( (end - start) / 1000 ))
            """
        let result = try await sandbox.run(SandboxCommand(["/bin/sh", "-c", script], timeout: .seconds(600)))
        guard result.status.exitCode == 0,
            let micros = Double(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        else {
            throw CorralError(.engine, "the clone in the sandbox failed: \(result.stderr.prefix(300))")
        }
        return micros / 1000
    }

    static let plainEnvironment: [String: String] = [
        "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "HOME": NSTemporaryDirectory(),
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
    ]

    /// The host's git straight to the upstream, the token in an extra header set through the
    /// environment (never an argument).
    static func directEnvironment(token: String) -> [String: String] {
        var environment = plainEnvironment
        let basic = Data("x-access-token:\(token)".utf8).base64EncodedString()
        environment["GIT_CONFIG_COUNT"] = "1"
        environment["GIT_CONFIG_KEY_0"] = "http.extraHeader"
        environment["GIT_CONFIG_VALUE_0"] = "Authorization: Basic \(basic)"
        return environment
    }

    /// Runs the host's git and returns the milliseconds it took, from spawn to exit.
    static func timeGit(_ arguments: [String], environment: [String: String]) throws -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        let output = try ChildProcess.run("/usr/bin/git", arguments, environment: environment, limit: 4096)
        let elapsed = (clock.now - start).benchMilliseconds
        guard output.termination.succeeded else {
            throw CorralError(.engine, "git \(arguments.first ?? "") on the host failed: \(output.reason)")
        }
        return elapsed
    }

    static func directorySize(_ url: URL) -> Int64 {
        guard let walker = FileManager.default.enumerator(at: url, includingPropertiesForKeys: [.fileSizeKey]) else {
            return 0
        }
        var total: Int64 = 0
        for case let file as URL in walker {
            total += Int64((try? file.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0)
        }
        return total
    }
}

/// corral-init's forwarder run on the host: a loopback port forwarded to one sandbox's gateway
/// socket, the path a sandbox's git takes, without the container.
final class HostForwarder: Sendable {
    let port: Int
    private let process: ChildProcess

    private init(port: Int, process: ChildProcess) {
        self.port = port
        self.process = process
    }

    static func start(socket: String) async throws -> HostForwarder {
        let port = try BenchProcess.freePort()
        let process = try ChildProcess.spawn(
            try SandboxEnvironment.locateInit(), [],
            environment: ["CORRAL_GATEWAY_SOCKET": socket, "CORRAL_PROXY_PORT": "\(port)"])
        let forwarder = HostForwarder(port: port, process: process)
        let deadline = ContinuousClock.now + .seconds(20)
        while !TestEnvironment.tcpPortAccepts(port: port) {
            guard process.isRunning, ContinuousClock.now < deadline else {
                forwarder.stop()
                throw CorralError(.unavailable, "corral-init did not listen on 127.0.0.1:\(port)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        return forwarder
    }

    func stop() {
        process.signal(SIGTERM)
        process.wait()
    }
}
