import CorralCore
import CorralPolicy
import DockerEngine
import Foundation
import Logging
import Synchronization

/// Makes, claims, finds, lists and removes sandboxes on one engine.
///
/// `provision` claims a warm pool member when the request names a template whose pool has one
/// idle, and makes the sandbox cold otherwise. Either way the per-session settings are bound
/// afterwards, so both paths hand out the same thing: the sandbox's gateway is attached with
/// its grants and egress hosts, its repository cloned into /workspace, and its record written.
public final class Provisioner: Sendable {
    public struct Configuration: Sendable {
        public var environment: SandboxEnvironment
        public var tools: ToolConfiguration = ToolConfiguration()
        /// The templates `provision` and the pools know, by name.
        public var templates: [SandboxTemplate] = []
        /// How long a claim may take between taking a member and writing its record. Past it,
        /// a claimed container without a record is an orphan, and an abandoned claim marker on
        /// a pool member retires it.
        public var claimGrace: Duration = .seconds(60)
        /// Where sandboxes get their gateway socket. With one, every sandbox is attached (what
        /// is not granted is refused with a reason the agent can read, and recorded); without
        /// one (a process other than the service), requests that need it are refused.
        public var gateway: (any SandboxGateway)?
        /// Limit for cloning a sandbox's repository.
        public var workspaceTimeout: Duration = .seconds(600)
        /// Whether this process listens for the control connections of the sandboxes it makes
        /// and adopts (commands then skip the engine's exec). Needs a state directory.
        public var controlConnections = true

        public init(
            environment: SandboxEnvironment, templates: [SandboxTemplate] = [], gateway: (any SandboxGateway)? = nil
        ) {
            self.environment = environment
            self.templates = templates
            self.gateway = gateway
        }

        public func template(named name: TemplateName) -> SandboxTemplate? {
            templates.first { $0.name == name }
        }
    }

    public let engine: DockerEngineClient
    public let configuration: Configuration
    public let metrics: ProvisionMetrics
    let logger: Logger
    /// Pools running in this process, by template: `provision` asks them before the engine.
    private let pools = Mutex<[TemplateName: WarmPool]>([:])
    private let cachedInstance = Mutex<String?>(nil)
    /// Sandboxes this provisioner is making cold right now: record-less, but no orphans.
    private let making = Mutex<Set<SandboxID>>([])
    /// Whether the host's accounts were checked against sandboxes' uids (once per process).
    private let accountsChecked = Mutex(false)
    private let recordStore: SandboxRecordStore
    /// The control connections this process holds; nil without a state directory.
    public let control: ControlChannels?

    public init(
        engine: DockerEngineClient, configuration: Configuration, metrics: ProvisionMetrics = ProvisionMetrics(),
        logger: Logger? = nil
    ) {
        self.engine = engine
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger ?? Logger(label: "corral.sandbox")
        self.control =
            configuration.controlConnections && configuration.environment.sandboxesDirectory != nil
            ? ControlChannels(logger: self.logger) : nil
        if let directory = configuration.environment.sandboxesDirectory {
            self.recordStore = SandboxRecordStore(directory: directory)
        } else {
            // Without a state directory the provisioner is an instance of its own that lives as
            // long as it does: an id in memory, records in a shared temporary directory (keyed
            // by sandbox id, so provisioners never collide there).
            self.recordStore = SandboxRecordStore(directory: SandboxEnvironment.ephemeralSandboxes)
            cachedInstance.withLock { $0 = "in-" + SandboxID.random().rawValue.dropFirst(3) }
        }
    }

    /// The tools every sandbox offers.
    public var tools: [any SandboxTool] {
        [BashTool(configuration: configuration.tools), TextEditorTool(configuration: configuration.tools)]
    }

    /// Where records live: `$STATE/sandboxes` (see `SandboxEnvironment.sandboxesDirectory`).
    public func records() throws -> SandboxRecordStore { recordStore }

    /// True while this provisioner is making `id` cold (created, not yet bound).
    public func isMaking(_ id: SandboxID) -> Bool { making.withLock { $0.contains(id) } }

    /// This state directory's instance id; every container made here carries it as a label.
    public func instanceID() throws -> String {
        if let known = cachedInstance.withLock({ $0 }) { return known }
        let id = try records().instanceID()
        cachedInstance.withLock { $0 = id }
        return id
    }

    // MARK: provision

    /// provision(resources): claims a warm sandbox when the request's template has an idle pool
    /// member, else creates and starts one with the hardened default. On any failure nothing is
    /// left behind.
    public func provision(_ request: ProvisionRequest) async throws -> Sandbox {
        let request = try request.validated()
        if request.template == nil && request.resources.disk.bytes == 0 && request.tenant != .local {
            // A workspace without a size limit could fill the host's disk: the operator's call.
            throw CorralError(
                .permissionDenied, "a workspace without a size limit (disk 0) is for the operator only",
                hint: "ask for a disk size, such as 10g")
        }
        let clock = ContinuousClock()
        let started = clock.now
        guard let name = request.template else {
            let binding = try await lateBinding(request, template: nil)
            let shape = ContainerShape(
                image: request.image, runtime: request.runtime, resources: request.resources, env: [:])
            return try await provisionCold(
                shape: shape, template: nil, request: request, binding: binding, started: started)
        }
        guard let template = configuration.template(named: name) else {
            let known = configuration.templates.map(\.name.rawValue).sorted()
            throw CorralError(
                .notFound, "no template named '\(name)'",
                hint: known.isEmpty
                    ? "templates come from corral.toml: pass --config FILE, set CORRAL_CONFIG, or put it at $STATE/corral.toml"
                    : "known templates: \(known.joined(separator: ", "))")
        }
        let binding = try await lateBinding(request, template: template)
        if let sandbox = try await claimWarm(template, request: request, binding: binding, started: started) {
            return sandbox
        }
        let fingerprint = try await fingerprint(of: template)
        return try await provisionCold(
            shape: template.shape, template: (template, fingerprint), request: request, binding: binding,
            started: started)
    }

    /// A claimed member, before its record is written.
    struct Claim: Sendable {
        var id: SandboxID
        var created: Date
    }

    private func claimWarm(
        _ template: SandboxTemplate, request: ProvisionRequest, binding: LateBinding, started: ContinuousClock.Instant
    ) async throws -> Sandbox? {
        let clock = ContinuousClock()
        let claim: Claim?
        if let pool = pools.withLock({ $0[template.name] }) {
            claim = try await pool.claim(tenant: request.tenant)
        } else if template.pool.minIdle > 0 {
            claim = try await claimFromEngine(template, tenant: request.tenant)
        } else {
            claim = nil
        }
        guard let claim else { return nil }
        let claimed = clock.now
        let late = try await bind(
            claim.id, template: template, path: .warm, created: claim.created, request: request, binding: binding)
        let ready = clock.now
        let report = ProvisionReport(
            path: .warm,
            phases: [
                "claim": (claimed - started).milliseconds, "start": 0, "setup": 0, "workspace": late.workspace,
                "ready": late.ready,
            ],
            totalMilliseconds: (ready - started).milliseconds)
        metrics.provisioned(path: .warm, template: template.name, milliseconds: report.totalMilliseconds)
        logger.info(
            "sandbox provisioned",
            metadata: [
                "sandbox": "\(claim.id)", "tenant": "\(request.tenant)", "path": "warm", "template": "\(template.name)",
                "ms": "\(Int(report.totalMilliseconds))",
            ])
        return handle(claim.id, tenant: request.tenant, provisioning: report)
    }

    /// Claims an idle member of the template straight through the engine, as a process without
    /// a pool of its own does (the command line with no service running).
    func claimFromEngine(_ template: SandboxTemplate, tenant: TenantID) async throws -> Claim? {
        let fingerprint: String
        do {
            fingerprint = try await self.fingerprint(of: template)
        } catch let error as CorralError where error.code == .notFound {
            return nil  // no image: no members either; the cold path says what is missing
        }
        let members = try await engine.listContainers(
            all: false,
            labels: [
                "\(SandboxLabels.managed)=1", "\(SandboxLabels.instance)=\(try instanceID())",
                "\(SandboxLabels.pool)=\(template.name)", "\(SandboxLabels.templateHash)=\(fingerprint)",
            ])
        var candidates: [Claim] = members.compactMap { summary in
            guard case .member(let name, let id) = SandboxLabels.classify(containerName: summary.name),
                name == template.name,
                summary.state == "running"
            else { return nil }
            return Claim(
                id: id,
                created: Self.createdDate(summary.labels) ?? Date(timeIntervalSince1970: TimeInterval(summary.created)))
        }
        // Claimers in other processes start at different members.
        candidates.shuffle()
        for candidate in candidates where try await takeMember(candidate.id, template: template.name, tenant: tenant) {
            return candidate
        }
        return nil
    }

    /// Takes one pool member for `tenant`: the claim marker decides who gets it (exactly one
    /// caller, across processes), then the rename gives it the tenant's name. False when
    /// another claimer or the pool took it first, or it is gone.
    func takeMember(_ id: SandboxID, template: TemplateName, tenant: TenantID) async throws -> Bool {
        let store = try records()
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

    /// Binds the per-session settings to a running sandbox: attaches its gateway, clones its
    /// repository, then writes its record (the record last, so that a record always stands
    /// for a sandbox that is ready). On any failure the sandbox is removed, its gateway
    /// detached and its host directory deleted: it would otherwise be an orphan. Returns the
    /// milliseconds of the workspace (gateway and clone) and of the record.
    private func bind(
        _ id: SandboxID, template: SandboxTemplate?, path: ProvisionReport.Path, created: Date,
        request: ProvisionRequest, binding: LateBinding
    ) async throws -> (workspace: Double, ready: Double) {
        let clock = ContinuousClock()
        let started = clock.now
        let container = SandboxLabels.containerName(tenant: request.tenant, sandbox: id)
        let workspace: BoundWorkspace
        do {
            workspace = try await bindWorkspace(id, container: container, request: request, binding: binding)
        } catch {
            await discard(container, id: id)
            throw error
        }
        let workspaceDone = clock.now
        let now = Date()
        let ttl = request.ttl ?? template?.ttl
        let record = SandboxRecord(
            id: id, tenant: request.tenant, session: request.session, template: template?.name, path: path,
            created: created, bound: now, expires: ttl.map { now.addingTimeInterval($0.milliseconds / 1000) },
            idleTTL: request.idleTTL ?? template?.idleTTL, env: request.env, labels: request.labels,
            gateway: workspace.policy, workspace: workspace.workspace)
        let store = try records()
        do {
            try store.write(record)
            store.touch(id)
        } catch {
            await discard(container, id: id)
            throw error
        }
        return ((workspaceDone - started).milliseconds, (clock.now - workspaceDone).milliseconds)
    }

    // MARK: Making containers

    /// Refuses to make sandboxes while a host account holds a uid of theirs (see `SandboxUser`).
    private func checkHostAccounts() throws {
        guard !accountsChecked.withLock({ $0 }) else { return }
        try SandboxUser.checkHostAccounts()
        accountsChecked.withLock { $0 = true }
    }

    private func provisionCold(
        shape: ContainerShape, template: (SandboxTemplate, String)?, request: ProvisionRequest, binding: LateBinding,
        started: ContinuousClock.Instant
    ) async throws -> Sandbox {
        let clock = ContinuousClock()
        let id = SandboxID.random()
        let name = SandboxLabels.containerName(tenant: request.tenant, sandbox: id)
        // Who is making it: a reaper spares a sandbox whose maker is alive (see SandboxReaper).
        var labels: [String: String] = [SandboxLabels.preparer: ProcessIdentity.current]
        if let (template, fingerprint) = template {
            labels[SandboxLabels.template] = template.name.rawValue
            labels[SandboxLabels.templateHash] = fingerprint
        }
        let createdAt = Date()
        // A reaper takes a record-less sandbox older than the claim grace for an orphan; a
        // setup or a clone may take longer. While this process is making it, its directory's
        // time stays fresh; should the process die, the sandbox is an orphan a grace later.
        let store = try records()
        let interval = max(configuration.claimGrace / 4, .milliseconds(100))
        let heartbeat = Task {
            while (try? await Task.sleep(for: interval)) != nil { store.touchDirectory(id) }
        }
        making.withLock { _ = $0.insert(id) }
        defer {
            heartbeat.cancel()
            making.withLock { _ = $0.remove(id) }
        }
        let timings = try await makeContainer(
            id: id, name: name, shape: shape, setup: template?.0, labels: labels, created: createdAt)
        let late = try await bind(
            id, template: template?.0, path: .cold, created: createdAt, request: request, binding: binding)
        let ready = clock.now
        var phases = timings
        phases["workspace"] = late.workspace
        phases["ready"] = late.ready
        let report = ProvisionReport(path: .cold, phases: phases, totalMilliseconds: (ready - started).milliseconds)
        metrics.provisioned(path: .cold, template: template?.0.name, milliseconds: report.totalMilliseconds)
        logger.info(
            "sandbox provisioned",
            metadata: [
                "sandbox": "\(id)", "tenant": "\(request.tenant)", "path": "cold", "image": "\(shape.image)",
                "runtime": "\(shape.runtime)", "ms": "\(Int(report.totalMilliseconds))",
            ])
        return handle(id, tenant: request.tenant, provisioning: report)
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
    private func makeContainer(
        id: SandboxID, name: String, shape: ContainerShape, setup template: SandboxTemplate?, labels: [String: String],
        created: Date
    ) async throws -> [String: Double] {
        let clock = ContinuousClock()
        let started = clock.now
        let spec = shape.containerSpec(
            sandbox: id, environment: configuration.environment, created: created, instance: try instanceID(),
            extraLabels: labels)
        try checkHostAccounts()
        let environment = configuration.environment
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
            engine: engine, container: container, sandbox: sandbox, environment: configuration.environment,
            records: records, control: control)
    }

    /// Listens for the control connection of a sandbox this process did not make (adopted
    /// after a restart); nothing happens when it listens already or keeps no connections.
    public func listenControl(_ id: SandboxID) async {
        guard let control, !control.isListening(id),
            let directory = configuration.environment.gatewayDirectory(for: id),
            FileManager.default.fileExists(atPath: directory.path)
        else { return }
        do {
            try await control.listen(id, directory: directory)
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

    // MARK: Pools in this process

    func register(_ pool: WarmPool, template: TemplateName) {
        pools.withLock { $0[template] = pool }
    }

    func unregister(template: TemplateName, pool: WarmPool) {
        pools.withLock { if $0[template] === pool { $0[template] = nil } }
    }

    // MARK: Handles, listing, removal

    /// A handle on an existing sandbox, without asking the engine. Its first use tells whether
    /// the sandbox is there.
    public func handle(_ id: SandboxID, tenant: TenantID = .local, provisioning: ProvisionReport? = nil) -> Sandbox {
        Sandbox(
            id: id, tenant: tenant, engine: engine, environment: configuration.environment,
            records: recordStore, gateway: configuration.gateway, control: control, tools: tools,
            configuration: configuration.tools, provisioning: provisioning, logger: logger)
    }

    /// A handle on an existing sandbox, checked with the engine.
    public func sandbox(_ id: SandboxID, tenant: TenantID = .local) async throws -> Sandbox {
        let sandbox = handle(id, tenant: tenant)
        _ = try await sandbox.info()
        return sandbox
    }

    /// Every claimed or cold sandbox of this instance, of one tenant or of all (pool members
    /// are listed by `WarmPool.members`).
    public func list(tenant: TenantID? = nil) async throws -> [SandboxInfo] {
        let containers = try await engine.listContainers(
            all: true, labels: ["\(SandboxLabels.managed)=1", "\(SandboxLabels.instance)=\(try instanceID())"])
        let store = try records()
        return containers.compactMap { summary -> SandboxInfo? in
            guard let (owner, id) = SandboxLabels.parse(containerName: summary.name), tenant == nil || owner == tenant
            else { return nil }
            let record = try? store.read(id)
            // Half-made by a process that died (the reaper's next sweep removes it): nobody's
            // sandbox, and no part of a quota.
            if record == nil, store.claimOwner(id) == nil, Self.makerIsDead(summary.labels) { return nil }
            return SandboxInfo(summary: summary, record: record, lastActivity: store.lastActivity(id))
        }
        .sorted { ($0.created ?? .distantPast, $0.id) < ($1.created ?? .distantPast, $1.id) }
    }

    /// Removes one sandbox; `.notFound` when there is none by that id for this tenant.
    public func remove(_ id: SandboxID, tenant: TenantID = .local) async throws {
        try await handle(id, tenant: tenant).remove()
    }

    /// Removes a container, its gateway socket and the host's directory for it; cancellation
    /// does not stop it.
    func discard(_ name: String, id: SandboxID) async {
        let engine = self.engine
        configuration.gateway?.detach(sandbox: id)
        control?.close(id)
        await Task.detached { _ = try? await engine.removeContainer(name, force: true, volumes: true) }.value
        configuration.environment.removeHostDirectory(for: id)
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

extension Provisioner {
    /// Removes every container made from a state directory (its records in `sandboxes`):
    /// claimed sandboxes, pool members, ones being made, with records or without, found by
    /// the instance label; their volumes and host directories go with them. For tearing a
    /// state directory down (tests, benchmarks). Returns the names of any container still
    /// there afterwards: none, unless the engine refused a removal.
    @discardableResult
    public static func removeEverything(engine: DockerEngineClient, sandboxesDirectory: URL) async throws -> [String] {
        guard FileManager.default.fileExists(atPath: sandboxesDirectory.path) else { return [] }
        let store = SandboxRecordStore(directory: sandboxesDirectory)
        let labels = ["\(SandboxLabels.managed)=1", "\(SandboxLabels.instance)=\(try store.instanceID())"]
        for container in try await engine.listContainers(all: true, labels: labels) {
            _ = try? await engine.removeContainer(container.id, force: true, volumes: true)
            if let id = container.labels[SandboxLabels.sandbox].flatMap(SandboxID.init) { store.remove(id) }
        }
        let left = try await engine.listContainers(all: true, labels: labels)
        // Host directories whose container went some other way: their workspaces are mounted
        // until removed here.
        let kept = Set(left.compactMap { $0.labels[SandboxLabels.sandbox].flatMap(SandboxID.init) })
        for id in store.ids() where !kept.contains(id) { store.remove(id) }
        return left.map(\.name)
    }
}
