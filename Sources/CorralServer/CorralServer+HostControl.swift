import CorralAPI
import CorralCore
import CorralHost
import CorralSandbox
import Hummingbird

/// What the control plane adds around the engine host's routes (`HostAPI`): quotas across
/// replicas and workers, sessions, tenants removed while a request runs, and E2B's creates
/// and listings on workers.
extension CorralServer: HostControl {
    package var tenantTokens: (any TenantTokens)? { tenants }

    package func admitSandbox(_ tenant: TenantID, _ make: @escaping @Sendable () async throws -> Sandbox)
        async throws -> Sandbox
    {
        try await quotas.admit(
            tenant, limit: configuration.sandboxesPerTenant, what: .sandboxes,
            current: { try await sandboxCount(of: tenant) }, make)
    }

    package func sandboxRemoved(_ tenant: TenantID) async {
        // Other replicas count this one's sandboxes from what it published.
        await quotas.publish(tenant)
    }

    package func requireSession(_ id: SessionID, tenant: TenantID) async throws {
        guard let sessions else { throw CorralError(.unsupported, "this service keeps no sessions") }
        let info = try await sessions.session(id)
        guard info.tenant == tenant else { throw CorralError.notFound("session \(id) not found") }
    }

    package func e2bCreateElsewhere(_ body: JSONValue, request: Request, tenant: TenantID, templateID: String)
        async throws -> Response?
    {
        guard let worker = try await placeOnWorker(tenant: tenant, templateID: templateID) else { return nil }
        return try await e2bCreate(body, request: request, tenant: tenant, on: worker)
    }

    package func e2bRowsElsewhere(_ request: Request, tenant: TenantID) async -> [JSONValue]? {
        guard let fleet else { return nil }
        return await e2bWorkerRows(request, tenant: tenant, fleet: fleet)
    }
}
