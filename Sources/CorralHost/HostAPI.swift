import CorralAPI
import CorralCore
import CorralSandbox
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Prometheus

/// What an engine host serves over HTTP: its sandboxes (create, inspect, execute, exec, files,
/// archives), its pools, its health and metrics, and E2B's API for the sandboxes it runs. The
/// same routes answer on a worker's link and, inside corrald, on the control plane's own
/// listeners, where `CorralServer` adds tenants, sessions, agent runs, placement and the
/// console around them (`HostControl`).
///
/// This module knows nothing of the control plane: no tenant registry, no session store, no
/// fleet. Its one seam is `HostControl`; on a worker's link it is `LinkControl`, since the
/// control plane admitted the call before it sent it.
public struct HostAPI: Sendable {
    public struct Limits: Sendable {
        /// Largest tar a request may send into a sandbox.
        public var maxArchiveBytes: Int64 = 1 << 30
        /// Largest single file through the files route.
        public var maxFileBytes = 8 << 20
        /// The state directory, named in no error a client sees.
        public var stateDirectory: String?
        /// A request head must arrive whole within this time.
        public var headerTimeout: Duration = .seconds(30)
        /// A keep-alive connection with no request under way is closed after this time.
        public var idleTimeout: Duration = .seconds(60)
        /// The largest request head; a larger one gets 431.
        public var maxHeadBytes = 64 << 10
        /// Most sandboxes one tenant may hold here (`[limits] sandboxes_per_tenant`); on
        /// corrald the control plane counts across its workers instead (`HostControl`).
        public var sandboxesPerTenant = 20

        public init() {}
    }

    /// Who a request is.
    public enum AuthMode: Sendable {
        /// Every request is the local tenant's: the unix socket in the state directory.
        case local
        /// Bearer tokens name the tenant: TCP.
        case tokens
        /// The control plane names the tenant: a worker's link (`WorkerAgent`), for its epoch.
        case controlPlane(currentEpoch: @Sendable () -> Int64?)

        package var isControlPlane: Bool {
            if case .controlPlane = self { return true }
            return false
        }
    }

    public let provisioner: Provisioner
    public let pools: [WarmPool]
    public let limits: Limits
    /// What `/metrics` prints.
    public let metrics: PrometheusCollectorRegistry
    public let logger: Logger
    package let serverMetrics: ServerMetrics
    /// Commands this host started and still follows, for their stdin and resizes.
    package let liveCommands = LiveCommands()
    /// Requests under way, for an idle exit.
    package let activity = ServerActivity()
    /// Creates under way and counted, per tenant; shared with the control plane's additions.
    package let quotas: QuotaGate
    /// What the control plane adds; `LinkControl` on a worker's link.
    package private(set) var control: any HostControl

    public init(
        provisioner: Provisioner, pools: [WarmPool], limits: Limits = Limits(),
        metrics: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), logger: Logger
    ) {
        self.init(
            provisioner: provisioner, pools: pools, limits: limits, metrics: metrics, quotas: QuotaGate(),
            logger: logger)
    }

    package init(
        provisioner: Provisioner, pools: [WarmPool], limits: Limits, metrics: PrometheusCollectorRegistry,
        quotas: QuotaGate, logger: Logger
    ) {
        self.provisioner = provisioner
        self.pools = pools
        self.limits = limits
        self.metrics = metrics
        self.logger = logger
        self.quotas = quotas
        self.serverMetrics = ServerMetrics(factory: PrometheusMetricsFactory(registry: metrics))
        self.control = LinkControl(provisioner: provisioner, quotas: quotas, limit: limits.sandboxesPerTenant)
    }

    /// The same host (its commands, activity and metrics shared) with `control` around it.
    package func with(control: any HostControl) -> HostAPI {
        var copy = self
        copy.control = control
        return copy
    }

    // MARK: Routers

    /// The middleware every listener of this host's starts with (activity, metrics, errors,
    /// and on a worker's link its scope), then `/v1/health` and `/metrics`.
    package func addBase(to router: Router<CorralRequestContext>, auth: AuthMode) {
        router.add(middleware: ActivityMiddleware(activity: activity))
        router.add(middleware: MetricsMiddleware(factory: serverMetrics.factory))
        router.add(
            middleware: ErrorMiddleware(
                metrics: serverMetrics, redactions: limits.stateDirectory.map { [($0, "$STATE")] } ?? []))
        // A worker's link serves the sandboxes, not the control plane's business.
        if case .controlPlane(let epoch) = auth { router.add(middleware: WorkerLinkScope(currentEpoch: epoch)) }
        addHealthRoutes(to: router)
    }

    /// `/v1`, behind the middleware that decides who is asking.
    package func v1(_ router: Router<CorralRequestContext>, auth: AuthMode) -> RouterGroup<CorralRequestContext> {
        let mode: AuthMiddleware.Mode
        switch auth {
        case .local: mode = .local
        case .tokens: mode = .tokens(control.tenantTokens)
        case .controlPlane(let epoch): mode = .controlPlane(currentEpoch: epoch)
        }
        return router.group("v1").add(middleware: AuthMiddleware(mode: mode))
    }

    /// The sandboxes' routes under `/v1`: create, list, inspect, remove, execute, exec, files,
    /// archives, and the pools.
    package func addSandboxAPI(to v1: RouterGroup<CorralRequestContext>) {
        addSandboxRoutes(to: v1)
        addCommandRoutes(to: v1)
        addFileRoutes(to: v1)
        addPoolRoutes(to: v1)
    }

    /// What a worker serves on its link: the sandboxes' API as the control plane's calls need
    /// it, the heartbeat's status, the replicas it is told of, its pools' targets, and E2B's
    /// API for the sandboxes placed here.
    public func workerRouter(
        currentEpoch: @escaping @Sendable () -> Int64?, status: @escaping @Sendable () async -> WorkerStatus,
        replicas: @escaping @Sendable (WorkerReplicas) async -> WorkerReplicas = { $0 }
    ) -> Router<CorralRequestContext> {
        let auth = AuthMode.controlPlane(currentEpoch: currentEpoch)
        let router = Router(context: CorralRequestContext.self)
        addBase(to: router, auth: auth)
        addSandboxAPI(to: v1(router, auth: auth))
        router.group("v1/worker").add(middleware: AuthMiddleware(mode: .controlPlane(currentEpoch: currentEpoch)))
            .get("status") { _, _ -> Response in
                JSONResponse.make(await status())
            }
            .put("replicas") { request, context -> Response in
                let body = try await decodeJSON(WorkerReplicas.self, from: request, context: context)
                return JSONResponse.make(await replicas(body))
            }
            .put("pools") { [pools] request, context -> Response in
                let body = try await decodeJSON(WorkerPoolTargets.self, from: request, context: context)
                return JSONResponse.make(try await Self.setPoolTargets(body, pools: pools))
            }
        // E2B's API for the sandboxes placed here (docs/e2b.md): the control plane checked the
        // API key, and forwards envd's calls for them with the sandbox's access token.
        addE2BRoutes(to: router, auth: auth)
        return router
    }

    /// A worker's pools take the targets its control plane set; a pool the control plane does
    /// not name goes back to its template's `min_idle`. Answers the pools as they are now.
    static func setPoolTargets(_ body: WorkerPoolTargets, pools: [WarmPool]) async throws -> [WorkerPoolStatus] {
        var wanted: [String: Int] = [:]
        for target in body.targets {
            guard target.minIdle >= 0, wanted.updateValue(target.minIdle, forKey: target.template) == nil else {
                throw CorralError.invalidArgument(
                    "pool target for '\(target.template)' is negative or given twice",
                    hint: "one per template, 0 or more")
            }
        }
        var statuses: [WorkerPoolStatus] = []
        for pool in pools {
            await pool.setTarget(minIdle: wanted[pool.template.name.rawValue])
            statuses.append(WorkerPoolStatus(await pool.currentStatus()))
        }
        return statuses
    }

    /// HTTP/1.1 with the connection guard ahead of the decoder and Hummingbird's idle timeout.
    package func httpServer() -> HTTPServerBuilder {
        let guardLimits = ConnectionLimits(headerTimeout: limits.headerTimeout, maxHeadBytes: limits.maxHeadBytes)
        let idle = TimeAmount.milliseconds(Int64(limits.idleTimeout.milliseconds.rounded(.up)))
        return HTTPServerBuilder { responder in
            GuardedHTTP1Channel(
                http1: HTTP1Channel(
                    responder: responder,
                    configuration: .init(additionalChannelHandlers: [RequestBoundaryObserver()], idleTimeout: idle)),
                limits: guardLimits)
        }
    }
}

/// A presented bearer token, as the control plane's tenants know it.
public enum TenantAuthentication: Sendable, Hashable {
    /// A tenant's token; `tokenSHA256` tells this tenant apart from a later one of the same name.
    case tenant(TenantID, tokenSHA256: String)
    /// A token stored under a name the system uses (an old or hand-edited tenants.json):
    /// never accepted.
    case reserved(TenantID)
    case unknown
}

/// Who checks bearer tokens: the control plane's tenants.
public protocol TenantTokens: Sendable {
    func authenticate(token: String) async throws -> TenantAuthentication
    /// Where the tokens are kept, for messages.
    var location: String { get }
}

/// What the control plane adds around the host's routes: quotas, sessions, tenants that may
/// be removed while a request runs, and sandboxes placed on other hosts.
package protocol HostControl: Sendable {
    /// For `AuthMode.tokens`; nil: no bearer token is valid here.
    var tenantTokens: (any TenantTokens)? { get }
    /// Makes a sandbox for `tenant` within its quota.
    func admitSandbox(_ tenant: TenantID, _ make: @escaping @Sendable () async throws -> Sandbox) async throws
        -> Sandbox
    /// After `tenant` removed a sandbox.
    func sandboxRemoved(_ tenant: TenantID) async
    /// A session a create names must be the tenant's.
    func requireSession(_ id: SessionID, tenant: TenantID) async throws
    /// Undoes what a request made when its tenant was removed while it ran.
    func keepOnlyIfTenantRemains(_ context: CorralRequestContext, undo: () async -> Void) async throws
    /// E2B's create, placed on another host; nil: made here.
    func e2bCreateElsewhere(_ body: JSONValue, request: Request, tenant: TenantID, templateID: String) async throws
        -> Response?
    /// The tenant's sandboxes on other hosts, as E2B lists them; nil: there are none.
    func e2bRowsElsewhere(_ request: Request, tenant: TenantID) async -> [JSONValue]?
}

/// A worker's link: the control plane admitted each call (quotas across the fleet, the
/// tenant, the session, which it sends as a label) before it sent it. The host still holds a
/// tenant to its own `sandboxes_per_tenant`, counting only its own sandboxes: the only quota
/// an agent run's sandbox meets on a worker.
package struct LinkControl: HostControl {
    let provisioner: Provisioner
    let quotas: QuotaGate
    let limit: Int

    package var tenantTokens: (any TenantTokens)? { nil }

    package func admitSandbox(_ tenant: TenantID, _ make: @escaping @Sendable () async throws -> Sandbox)
        async throws -> Sandbox
    {
        try await quotas.admit(
            tenant, limit: limit, what: .sandboxes,
            current: { [provisioner] in
                try await provisioner.list(tenant: tenant).count
            }, make)
    }

    package func sandboxRemoved(_ tenant: TenantID) async {}

    package func requireSession(_ id: SessionID, tenant: TenantID) async throws {
        throw CorralError(
            .unsupported, "this host keeps no sessions", hint: "name the session to the control plane instead")
    }

    package func keepOnlyIfTenantRemains(_ context: CorralRequestContext, undo: () async -> Void) async throws {}

    package func e2bCreateElsewhere(_ body: JSONValue, request: Request, tenant: TenantID, templateID: String)
        async throws -> Response?
    {
        nil
    }

    package func e2bRowsElsewhere(_ request: Request, tenant: TenantID) async -> [JSONValue]? { nil }
}
