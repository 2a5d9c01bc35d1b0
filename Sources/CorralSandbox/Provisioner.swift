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
    /// Makes and discards containers, for cold provisioning here and for the pools.
    public let maker: ContainerMaker
    /// Pools running in this process, by template: `provision` asks them before the engine.
    let pools = PoolRegistry()
    /// Sandboxes this provisioner is making cold right now: record-less, but no orphans.
    private let making = Mutex<Set<SandboxID>>([])
    /// The control connections this process holds; nil without a state directory.
    public var control: ControlChannels? { maker.control }

    public init(
        engine: DockerEngineClient, configuration: Configuration, metrics: ProvisionMetrics = ProvisionMetrics(),
        logger: Logger? = nil
    ) {
        self.engine = engine
        self.configuration = configuration
        self.metrics = metrics
        let logger = logger ?? Logger(label: "corral.sandbox")
        self.logger = logger
        self.maker = ContainerMaker(
            engine: engine, environment: configuration.environment, gateway: configuration.gateway,
            controlConnections: configuration.controlConnections, claimGrace: configuration.claimGrace,
            metrics: metrics, logger: logger)
    }

    /// The tools every sandbox offers.
    public var tools: [any SandboxTool] {
        [BashTool(configuration: configuration.tools), TextEditorTool(configuration: configuration.tools)]
    }

    /// Where records live: `$STATE/sandboxes` (see `SandboxEnvironment.sandboxesDirectory`).
    public func records() throws -> SandboxRecordStore { maker.records }

    /// True while this provisioner is making `id` cold (created, not yet bound).
    public func isMaking(_ id: SandboxID) -> Bool { making.withLock { $0.contains(id) } }

    /// This state directory's instance id; every container made here carries it as a label.
    public func instanceID() throws -> String { try maker.instanceID() }

    /// The template's fingerprint with its image resolved now; `.notFound` when the engine has
    /// no such image.
    public func fingerprint(of template: SandboxTemplate) async throws -> String {
        try await maker.fingerprint(of: template)
    }

    /// Listens for the control connection of a sandbox this process did not make (adopted
    /// after a restart); nothing happens when it listens already or keeps no connections.
    public func listenControl(_ id: SandboxID) async { await maker.listenControl(id) }

    /// Removes a container, its gateway socket and the host's directory for it.
    func discard(_ name: String, id: SandboxID) async { await maker.discard(name, id: id) }

    /// How commands reach `sandbox` from this process.
    func transport(container: String, sandbox: SandboxID, records: SandboxRecordStore?) -> any SandboxTransport {
        maker.transport(container: container, sandbox: sandbox, records: records)
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

    private func claimWarm(
        _ template: SandboxTemplate, request: ProvisionRequest, binding: LateBinding, started: ContinuousClock.Instant
    ) async throws -> Sandbox? {
        let clock = ContinuousClock()
        let claim: MemberClaim?
        if let pool = pools.pool(for: template.name) {
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
    func claimFromEngine(_ template: SandboxTemplate, tenant: TenantID) async throws -> MemberClaim? {
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
        var candidates: [MemberClaim] = members.compactMap { summary in
            guard case .member(let name, let id) = SandboxLabels.classify(containerName: summary.name),
                name == template.name,
                summary.state == "running"
            else { return nil }
            return MemberClaim(
                id: id,
                created: ContainerMaker.createdDate(summary.labels)
                    ?? Date(timeIntervalSince1970: TimeInterval(summary.created)))
        }
        // Claimers in other processes start at different members.
        candidates.shuffle()
        for candidate in candidates
        where try await maker.takeMember(candidate.id, template: template.name, tenant: tenant) {
            return candidate
        }
        return nil
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
            try await store.save(record)
            store.touch(id)
        } catch {
            await discard(container, id: id)
            throw error
        }
        return ((workspaceDone - started).milliseconds, (clock.now - workspaceDone).milliseconds)
    }

    // MARK: Making containers

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
        let timings = try await maker.makeContainer(
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

    // MARK: Handles, listing, removal

    /// A handle on an existing sandbox, without asking the engine. Its first use tells whether
    /// the sandbox is there.
    public func handle(_ id: SandboxID, tenant: TenantID = .local, provisioning: ProvisionReport? = nil) -> Sandbox {
        Sandbox(
            id: id, tenant: tenant, engine: engine, environment: configuration.environment,
            records: maker.records, gateway: configuration.gateway, control: control, tools: tools,
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
            if record == nil, store.claimOwner(id) == nil, ContainerMaker.makerIsDead(summary.labels) { return nil }
            return SandboxInfo(summary: summary, record: record, lastActivity: store.lastActivity(id))
        }
        .sorted { ($0.created ?? .distantPast, $0.id) < ($1.created ?? .distantPast, $1.id) }
    }

    /// Removes one sandbox; `.notFound` when there is none by that id for this tenant.
    public func remove(_ id: SandboxID, tenant: TenantID = .local) async throws {
        try await handle(id, tenant: tenant).remove()
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

/// A claimed member, before its record is written.
struct MemberClaim: Sendable {
    var id: SandboxID
    var created: Date
}

/// The warm pools running in this process, by template: pools enter when they start and
/// leave when they stop; provisioning asks here before the engine.
final class PoolRegistry: Sendable {
    private let pools = Mutex<[TemplateName: WarmPool]>([:])

    func register(_ pool: WarmPool, template: TemplateName) {
        pools.withLock { $0[template] = pool }
    }

    func unregister(template: TemplateName, pool: WarmPool) {
        pools.withLock { if $0[template] === pool { $0[template] = nil } }
    }

    func pool(for template: TemplateName) -> WarmPool? { pools.withLock { $0[template] } }
}
