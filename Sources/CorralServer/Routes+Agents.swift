import CorralAPI
import CorralCore
import CorralFleet
import CorralGateway
import CorralHarness
import CorralHost
import CorralSandbox
import CorralSession
import Foundation
import Hummingbird

extension CorralServer {
    func addAgentRoutes(to group: RouterGroup<CorralRequestContext>) {
        // Makes the agent session (its spec and task recorded first) and starts the harness.
        group.post("agents") { request, context -> Response in
            let tenant = try context.requireTenant()
            let body = try await decodeJSON(StartAgentRequest.self, from: request, context: context)
            let spec = try agentSpec(body, tenant: tenant)
            let brain = try await makeBrain(spec.brain, tenant: tenant)
            let store = try sessionStore()
            let harness = harness(for: tenant)
            let session = try await quotas.admit(
                tenant, limit: configuration.sessionsPerTenant, what: .sessions,
                current: { try await store.list().filter { $0.tenant == tenant }.count }
            ) { try await harness.create(task: body.task, spec: spec) }
            try await keepOnlyIfTenantRemains(context) { try? await store.delete(session) }
            try await startRun(session, context: context) { try await harness.run(session, brain: brain) }
            return JSONResponse.make(await workers.status(session), status: 202)
        }

        // Resumes a session's run from its log (a wake), with an optional new message.
        group.post("sessions/:id/harness/run") { request, context -> Response in
            let tenant = try context.requireTenant()
            let (id, _) = try await ownSession(context)
            let body =
                try await decodeOptionalJSON(RunHarnessRequest.self, from: request, context: context)
                ?? RunHarnessRequest()
            let harness = harness(for: tenant)
            guard let spec = try await harness.recordedSpec(id) else {
                throw CorralError.invalidArgument(
                    "session \(id) is not an agent session", hint: "start agents with POST /v1/agents")
            }
            // The spec comes from the session's log, which its tenant can write: the same
            // rules as for a new agent apply to it.
            let brain = try await makeBrain(spec.brain, tenant: tenant)
            try await startRun(id, context: context) { try await harness.run(id, brain: brain, message: body.message) }
            return JSONResponse.make(await workers.status(id), status: 202)
        }

        group.post("sessions/:id/harness/stop") { _, context -> Response in
            let (id, _) = try await ownSession(context)
            _ = await workers.stop(id)
            return JSONResponse.make(await workers.status(id))
        }

        group.get("sessions/:id/harness") { _, context -> Response in
            let (id, _) = try await ownSession(context)
            return JSONResponse.make(await workers.status(id))
        }
    }

    /// Starts a run for the request's tenant, unless that tenant was removed meanwhile; a run
    /// that started while its tenant was being removed stops at once (the removal stops the
    /// runs it finds; this catches one that starts just after).
    func startRun(
        _ session: SessionID, context: CorralRequestContext, _ body: @escaping @Sendable () async throws -> RunOutcome
    ) async throws {
        let tenant = try context.requireTenant()
        try await keepOnlyIfTenantRemains(context) {}
        try await workers.start(session, tenant: tenant, body)
        try await keepOnlyIfTenantRemains(context) { _ = await workers.stop(session) }
    }

    func harness(for tenant: TenantID) -> Harness {
        var configuration = Harness.Configuration()
        configuration.tenant = tenant
        let provisioner = self.provisioner
        let local = SandboxHands { provisioner }
        // With workers, a session's sandboxes are placed as the tenant's others are.
        let hands: any HandProvisioner = fleet.map { FleetHands(local: local, fleet: $0, server: self) } ?? local
        return Harness(
            store: sessions ?? NoSessions(), hands: hands, configuration: configuration, logger: logger)
    }

    func agentSpec(_ body: StartAgentRequest, tenant: TenantID) throws -> AgentSpec {
        let brain = try BrainSpec(parsing: body.brain, model: body.model)
        try Self.checkBrainAllowed(brain, tenant: tenant)
        var limits = AgentSpec.Limits()
        if let turns = body.maxTurns { limits.maxTurns = turns }
        limits.maxTokens = body.maxTokens
        limits.maxWallTime = body.maxTime?.duration
        return try AgentSpec(
            brain: brain, limits: limits, contextBudget: body.contextBudget ?? AgentSpec.defaultContextBudget,
            system: body.system, hands: HandSpec(template: body.template, repo: body.repo)
        ).validated()
    }

    /// A scripted brain reads a file on the service's machine, as the service's user: its path
    /// is an operator's setting, never a tenant's. Every brain the service makes passes here,
    /// whether its spec came from a request or from a session's log (which the session's
    /// tenant can append to).
    static func checkBrainAllowed(_ brain: BrainSpec, tenant: TenantID) throws {
        guard brain.provider == .scripted, tenant != .local else { return }
        throw CorralError(
            .permissionDenied, "scripted brains are for the local tenant only", hint: "use anthropic or openai")
    }

    func makeBrain(_ spec: BrainSpec, tenant: TenantID) async throws -> any Brain {
        try Self.checkBrainAllowed(spec, tenant: tenant)
        // A key the service's environment lacks comes from its vault (scope: the API's host).
        var storedKey: (@Sendable (String) async throws -> String?)?
        if let vault = runner.vault {
            storedKey = { host in try await vault.brainKey(host: host) }
        }
        return try await BrainFactory.make(
            spec, credentials: EnvironmentCredentials(environment: brainEnvironment, storedKey: storedKey),
            timeout: nil)
    }
}

/// Stands in when the service keeps no sessions: every call says so.
struct NoSessions: SessionStore {
    func refuse() -> CorralError { CorralError(.unsupported, "this service keeps no sessions") }
    func create(id: SessionID?, tenant: TenantID, metadata: [String: String]) async throws -> SessionInfo {
        throw refuse()
    }
    func append(_ session: SessionID, _ events: [NewEvent], expectedSeq: UInt64?, lease: Lease, durability: Durability)
        async throws
        -> AppendResult
    { throw refuse() }
    func readPage(_ session: SessionID, from: UInt64, limit: Int?) async throws -> EventPage { throw refuse() }
    func session(_ id: SessionID) async throws -> SessionInfo { throw refuse() }
    func list() async throws -> [SessionInfo] { throw refuse() }
    func wake(_ id: SessionID) async throws -> Lease { throw refuse() }
    func currentLease(_ id: SessionID) async throws -> Lease { throw refuse() }
    func fork(_ id: SessionID, atSeq: UInt64, newID: SessionID?) async throws -> SessionInfo { throw refuse() }
    func delete(_ id: SessionID) async throws { throw refuse() }
    func sync(_ id: SessionID) async throws { throw refuse() }
    func waitForHead(_ id: SessionID, beyond seq: UInt64) async throws -> UInt64 { throw refuse() }
}
