import CorralCore
import DockerEngine
import Foundation
import Logging
import Synchronization

/// Makes containers for sandboxes on one engine, and takes them apart: what cold provisioning
/// and warm pools share. It creates, starts and sets up a container with its host directory,
/// workspace file system and control connection, makes pool members, takes a member for a
/// claimer, and discards a container with everything the host kept for it.
///
/// The provisioner and the pools each hold one and never call into each other for it; this is
/// the part of an engine host that a worker (issue 12) runs, apart from the control plane's
/// placement.
public final class ContainerMaker: Sendable {
    public let engine: DockerEngineClient
    public let environment: SandboxEnvironment
    let gateway: (any SandboxGateway)?
    /// The control connections this process holds; nil without a state directory.
    public let control: ControlChannels?
    let records: SandboxRecordStore
    let metrics: ProvisionMetrics
    let claimGrace: Duration
    let logger: Logger
    private let cachedInstance = Mutex<String?>(nil)
    /// Whether the host's accounts were checked against sandboxes' uids (once per process).
    private let accountsChecked = Mutex(false)

    init(
        engine: DockerEngineClient, environment: SandboxEnvironment, gateway: (any SandboxGateway)?,
        controlConnections: Bool, claimGrace: Duration, metrics: ProvisionMetrics, logger: Logger
    ) {
        self.engine = engine
        self.environment = environment
        self.gateway = gateway
        self.metrics = metrics
        self.claimGrace = claimGrace
        self.logger = logger
        self.control =
            controlConnections && environment.sandboxesDirectory != nil ? ControlChannels(logger: logger) : nil
        if let directory = environment.sandboxesDirectory {
            self.records = SandboxRecordStore(directory: directory)
        } else {
            // Without a state directory the maker is an instance of its own that lives as long
            // as it does: an id in memory, records in a shared temporary directory (keyed by
            // sandbox id, so makers never collide there).
            self.records = SandboxRecordStore(directory: SandboxEnvironment.ephemeralSandboxes)
            cachedInstance.withLock { $0 = "in-" + SandboxID.random().rawValue.dropFirst(3) }
        }
    }

    /// This state directory's instance id; every container made here carries it as a label.
    public func instanceID() throws -> String {
        if let known = cachedInstance.withLock({ $0 }) { return known }
        let id = try records.instanceID()
        cachedInstance.withLock { $0 = id }
        return id
    }

    /// Refuses to make sandboxes while a host account holds a uid of theirs (see `SandboxUser`).
    private func checkHostAccounts() throws {
        guard !accountsChecked.withLock({ $0 }) else { return }
        try SandboxUser.checkHostAccounts()
        accountsChecked.withLock { $0 = true }
    }

    /// Makes one idle pool member of `template`: created and started under its preparing name,
    /// set up, then renamed to its member name, where claimers find it.
    func makeMember(_ template: SandboxTemplate, fingerprint: String, id: SandboxID) async throws {
        let preparing = SandboxLabels.preparingName(template: template.name, sandbox: id)
        let labels = [
            SandboxLabels.pool: template.name.rawValue, SandboxLabels.template: template.name.rawValue,
            SandboxLabels.templateHash: fingerprint, SandboxLabels.preparer: ProcessIdentity.current,
        ]
        _ = try await makeContainer(
            id: id, name: preparing, shape: template.shape, setup: template, labels: labels, created: Date())
        do {
            try await engine.renameContainer(
                preparing, to: SandboxLabels.memberName(template: template.name, sandbox: id))
        } catch {
            await discard(preparing, id: id)
            throw error
        }
    }

    /// Creates, starts and sets up a container; returns the phase timings. On any failure,
    /// cancellation included, the container and its host directory are removed.
    func makeContainer(
        id: SandboxID, name: String, shape: ContainerShape, setup template: SandboxTemplate?, labels: [String: String],
        created: Date
    ) async throws -> [String: Double] {
        let clock = ContinuousClock()
        let started = clock.now
        let spec = shape.containerSpec(
            sandbox: id, environment: environment, created: created, instance: try instanceID(),
            extraLabels: labels)
        try checkHostAccounts()
        let environment = environment
        try environment.makeHostDirectory(for: id, disk: shape.resources.disk)
        // The workspace's file system is made while the engine creates the container: the
        // engine binds it only when the container starts.
        let disk = Task { try await environment.mountWorkspace(for: id, disk: shape.resources.disk) }
        let directory = environment.gatewayDirectory(for: id)
        if let control, let directory {
            do {
                try await control.listen(id, directory: directory, newSandbox: true)
            } catch {
                _ = await disk.result
                environment.removeHostDirectory(for: id)
                throw error
            }
        }
        do {
            _ = try await engine.createContainer(name: name, spec)
        } catch {
            control?.close(id)
            _ = await disk.result
            environment.removeHostDirectory(for: id)
            if let error = error as? DockerEngineError {
                throw explainCreateFailure(error, shape: shape, template: template)
            }
            throw error
        }
        do {
            try await disk.value
        } catch {
            await discard(name, id: id)
            throw error
        }
        let createdAt = clock.now
        do {
            try await engine.startContainer(name)
        } catch {
            await discard(name, id: id)
            if let error = error as? DockerEngineError {
                throw CorralError(
                    .engine, "sandbox \(id) could not start: \(error.message)",
                    hint: shape.runtime == .runsc ? "check that runsc works here: corral doctor" : nil)
            }
            throw error
        }
        let startedAt = clock.now
        // corral-init dials in as it starts; the first command should not have to go the slow
        // way for the few milliseconds that takes. Past the wait, commands use the engine.
        if let control { _ = await control.waitForConnection(id, timeout: .seconds(2)) }
        if let template, !template.setup.isEmpty {
            do {
                try await runSetup(template, container: name, sandbox: id)
            } catch {
                await discard(name, id: id)
                throw error
            }
        }
        let setUp = clock.now
        return [
            "create": (createdAt - started).milliseconds, "start": (startedAt - createdAt).milliseconds,
            "setup": (setUp - startedAt).milliseconds,
        ]
    }

    /// How commands reach `sandbox` from this process: its control connection when there is
    /// one, else the engine's exec.
    func transport(container: String, sandbox: SandboxID, records: SandboxRecordStore?) -> any SandboxTransport {
        SandboxTransports.make(
            engine: engine, container: container, sandbox: sandbox, environment: environment,
            records: records, control: control)
    }

    /// Listens for the control connection of a sandbox this process did not make (adopted
    /// after a restart); nothing happens when it listens already or keeps no connections.
    public func listenControl(_ id: SandboxID) async {
        guard let control, !control.isListening(id),
            let directory = environment.gatewayDirectory(for: id),
            FileManager.default.fileExists(atPath: directory.path)
        else { return }
        do {
            try await control.adopt(id, directory: directory)
        } catch {
            logger.info(
                "cannot listen for a sandbox's control connection", metadata: ["sandbox": "\(id)", "error": "\(error)"])
        }
    }

    private func runSetup(_ template: SandboxTemplate, container: String, sandbox: SandboxID) async throws {
        let transport = transport(container: container, sandbox: sandbox, records: nil)
        for (index, command) in template.setup.enumerated() {
            var stderr = OutputCapture(limit: 2048)
            let status = try await transport.run(
                SandboxCommand(["/bin/sh", "-c", command], timeout: template.setupTimeout)
            ) { stream, bytes in
                if stream == .stderr { stderr.append(bytes) }
            }
            guard status.exitCode == 0 else {
                let tail = stderr.text(streamName: "stderr").split(separator: "\n").last.map(String.init) ?? ""
                throw CorralError(
                    .engine,
                    "template '\(template.name)': setup command \(index + 1) (\(command.prefix(60))) "
                        + (status.timedOut
                            ? "timed out after \(template.setupTimeout.compactDescription)"
                            : "exited with status \(status.exitCode)") + (tail.isEmpty ? "" : ": \(tail.prefix(200))"),
                    hint: "fix the template's setup in corral.toml")
            }
        }
    }

    /// The template's fingerprint with its image resolved now; `.notFound` when the engine has
    /// no such image.
    public func fingerprint(of template: SandboxTemplate) async throws -> String {
        guard let image = try await engine.inspectImage(template.image) else {
            throw CorralError(
                .notFound, "template '\(template.name)': image '\(template.image)' is not on the engine",
                hint: template.image == ProvisionRequest.defaultImage
                    ? "build it with `make image`" : "import or build it first (see images/README.md)")
        }
        return template.fingerprint(imageID: image.id)
    }

    /// Takes one pool member for `tenant`: the claim marker decides who gets it (exactly one
    /// caller, across processes), then the rename gives it the tenant's name. False when
    /// another claimer or the pool took it first, or it is gone.
    func takeMember(_ id: SandboxID, template: TemplateName, tenant: TenantID) async throws -> Bool {
        let store = records
        guard store.takeClaim(id) else {
            metrics.claimConflict(template: template)
            return false
        }
        do {
            try await engine.renameContainer(
                SandboxLabels.memberName(template: template, sandbox: id),
                to: SandboxLabels.containerName(tenant: tenant, sandbox: id))
            return true
        } catch let error as DockerEngineError where error.isNotFound {
            // Removed behind the pool's back; nothing is left to claim.
            store.remove(id)
            return false
        } catch let error as DockerEngineError where error.isConflict || error.status == 400 {
            metrics.claimConflict(template: template)
            return false
        } catch {
            store.releaseClaim(id)
            throw error
        }
    }

    /// Removes a container, its gateway socket and the host's directory for it; cancellation
    /// does not stop it.
    func discard(_ name: String, id: SandboxID) async {
        let engine = self.engine
        gateway?.detach(sandbox: id)
        control?.close(id)
        await Task.detached { _ = try? await engine.removeContainer(name, force: true, volumes: true) }.value
        environment.removeHostDirectory(for: id)
    }

    /// True when the container's maker (its `corral.preparer` label) surely no longer runs.
    static func makerIsDead(_ labels: [String: String]) -> Bool {
        labels[SandboxLabels.preparer].flatMap(ProcessIdentity.isAlive) == false
    }

    static func createdDate(_ labels: [String: String]) -> Date? {
        labels[SandboxLabels.created].flatMap(Double.init).map { Date(timeIntervalSince1970: $0) }
    }

    private func explainCreateFailure(_ error: DockerEngineError, shape: ContainerShape, template: SandboxTemplate?)
        -> CorralError
    {
        let prefix = template.map { "template '\($0.name)': " } ?? ""
        let message = error.message.lowercased()
        if error.isNotFound || message.contains("no such image") {
            return CorralError(
                .notFound, "\(prefix)image '\(shape.image)' is not on the engine",
                hint: shape.image == ProvisionRequest.defaultImage
                    ? "build it with `make image`" : "import or build it first (see images/README.md)")
        }
        if message.contains("runtime") {
            return CorralError(
                .invalidArgument,
                "\(prefix)runtime '\(shape.runtime)' is not registered with the engine: \(error.message)",
                hint: "register it in the engine's daemon.json (see docs/engine.md), or use --runtime runc")
        }
        if message.contains("memory") || message.contains("cpu") || message.contains("pids") {
            return CorralError(.invalidArgument, "\(prefix)the engine refused the sandbox's limits: \(error.message)")
        }
        return error.corralError
    }
}
