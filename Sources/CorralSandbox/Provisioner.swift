import CorralCore
import DockerEngine
import Foundation
import Logging

/// Makes, finds, lists and removes sandboxes on one engine.
public final class Provisioner: Sendable {
    public struct Configuration: Sendable {
        public var environment: SandboxEnvironment
        public var tools: ToolConfiguration = ToolConfiguration()

        public init(environment: SandboxEnvironment) {
            self.environment = environment
        }
    }

    public let engine: DockerEngineClient
    public let configuration: Configuration
    let logger: Logger

    public init(engine: DockerEngineClient, configuration: Configuration, logger: Logger? = nil) {
        self.engine = engine
        self.configuration = configuration
        self.logger = logger ?? Logger(label: "corral.sandbox")
    }

    /// The tools every sandbox offers.
    public var tools: [any SandboxTool] {
        [BashTool(configuration: configuration.tools), TextEditorTool(configuration: configuration.tools)]
    }

    /// provision(resources): creates and starts a sandbox with the hardened default. On any
    /// failure nothing is left behind.
    public func provision(_ request: ProvisionRequest) async throws -> Sandbox {
        let request = try request.validated()
        let clock = ContinuousClock()
        let started = clock.now
        let id = SandboxID.random()
        let name = SandboxLabels.containerName(tenant: request.tenant, sandbox: id)
        let spec = request.containerSpec(sandbox: id, environment: configuration.environment, created: Date())
        _ = try configuration.environment.prepareGatewayDirectory(for: id)
        do {
            _ = try await engine.createContainer(name: name, spec)
        } catch {
            configuration.environment.removeHostDirectory(for: id)
            if let error = error as? DockerEngineError { throw explainCreateFailure(error, request: request) }
            throw error
        }
        let created = clock.now
        do {
            try await engine.startContainer(name)
        } catch {
            await discard(name)
            if let error = error as? DockerEngineError {
                throw CorralError(
                    .engine, "sandbox \(id) could not start: \(error.message)",
                    hint: request.runtime == .runsc ? "check that runsc works here: corral doctor" : nil)
            }
            throw error
        }
        let ready = clock.now
        let report = ProvisionReport(
            path: .cold,
            phases: ["create": (created - started).milliseconds, "start": (ready - created).milliseconds],
            totalMilliseconds: (ready - started).milliseconds)
        logger.info(
            "sandbox provisioned",
            metadata: [
                "sandbox": "\(id)", "tenant": "\(request.tenant)", "path": "cold", "image": "\(request.image)",
                "runtime": "\(request.runtime)", "ms": "\(Int(report.totalMilliseconds))",
            ])
        return handle(id, tenant: request.tenant, provisioning: report)
    }

    /// A handle on an existing sandbox, without asking the engine. Its first use tells whether
    /// the sandbox is there.
    public func handle(_ id: SandboxID, tenant: TenantID = .local, provisioning: ProvisionReport? = nil) -> Sandbox {
        Sandbox(
            id: id, tenant: tenant, engine: engine, environment: configuration.environment, tools: tools,
            configuration: configuration.tools, provisioning: provisioning, logger: logger)
    }

    /// A handle on an existing sandbox, checked with the engine.
    public func sandbox(_ id: SandboxID, tenant: TenantID = .local) async throws -> Sandbox {
        let sandbox = handle(id, tenant: tenant)
        _ = try await sandbox.info()
        return sandbox
    }

    /// Every sandbox corral made on this engine, of one tenant or of all.
    public func list(tenant: TenantID? = nil) async throws -> [SandboxInfo] {
        var labels = ["\(SandboxLabels.managed)=1"]
        if let tenant { labels.append("\(SandboxLabels.tenant)=\(tenant)") }
        let containers = try await engine.listContainers(all: true, labels: labels)
        return containers.compactMap(SandboxInfo.init(summary:))
            .filter { tenant == nil || $0.tenant == tenant }
            .sorted { ($0.created ?? .distantPast, $0.id) < ($1.created ?? .distantPast, $1.id) }
    }

    /// Removes one sandbox; `.notFound` when there is none by that id for this tenant.
    public func remove(_ id: SandboxID, tenant: TenantID = .local) async throws {
        try await handle(id, tenant: tenant).remove()
    }

    /// Removes every sandbox whose ttl has passed; returns their ids.
    @discardableResult
    public func removeExpired(now: Date = Date()) async throws -> [SandboxID] {
        var removed: [SandboxID] = []
        for info in try await list() {
            guard let expires = info.expires, expires <= now else { continue }
            if (try? await engine.removeContainer(info.containerID, force: true, volumes: true)) == true {
                configuration.environment.removeHostDirectory(for: info.id)
                removed.append(info.id)
                logger.info("expired sandbox removed", metadata: ["sandbox": "\(info.id)"])
            }
        }
        return removed
    }

    private func discard(_ name: String) async {
        // Not cancellable: a half-made container must not outlive a cancelled provision.
        let engine = self.engine
        await Task.detached { _ = try? await engine.removeContainer(name, force: true, volumes: true) }.value
        if let (_, id) = SandboxLabels.parse(containerName: name) {
            configuration.environment.removeHostDirectory(for: id)
        }
    }

    private func explainCreateFailure(_ error: DockerEngineError, request: ProvisionRequest) -> CorralError {
        let message = error.message.lowercased()
        if error.isNotFound || message.contains("no such image") {
            return CorralError(
                .notFound, "image '\(request.image)' is not on the engine",
                hint: request.image == ProvisionRequest.defaultImage
                    ? "build it with `make image`" : "import or build it first (see images/README.md)")
        }
        if message.contains("runtime") {
            return CorralError(
                .invalidArgument, "runtime '\(request.runtime)' is not registered with the engine: \(error.message)",
                hint: "register it in the engine's daemon.json (see docs/engine.md), or use --runtime runc")
        }
        if message.contains("memory") || message.contains("cpu") || message.contains("pids") {
            return CorralError(.invalidArgument, "the engine refused the sandbox's limits: \(error.message)")
        }
        return error.corralError
    }
}
