import CorralAPI
import CorralCore
import CorralFleet
import CorralHost
import Foundation
import Hummingbird

extension CorralServer {
    /// The service's own administration of tenants (`corral tenant` uses it through the unix
    /// socket). Only the local tenant may call these; on TCP a tenant gets 403.
    func addTenantRoutes(to group: RouterGroup<CorralRequestContext>) {
        group.get("tenants") { _, context -> Response in
            try requireOperator(context)
            let rows = try await tenants.list().map {
                TenantSummary(
                    name: $0.id.rawValue, created: $0.created, reserved: TenantRegistry.isReserved($0.id) ? true : nil,
                    groups: $0.groups)
            }
            return JSONResponse.make(rows)
        }

        group.post("tenants") { request, context -> Response in
            try requireOperator(context)
            let body = try await decodeJSON(AddTenantRequest.self, from: request, context: context)
            let name = try TenantID(validating: body.name)
            let token = try await administration.add(name, groups: body.groups ?? [])
            return JSONResponse.make(AddedTenant(name: name.rawValue, token: token), status: 201)
        }

        group.delete("tenants/:name") { request, context -> Response in
            try requireOperator(context)
            let name = try TenantID(validating: try context.parameters.require("name"))
            let purge: Bool
            switch request.uri.queryParameters["purge"].map(String.init) {
            case nil, "false": purge = false
            case "true": purge = true
            case let other?:
                throw CorralError.invalidArgument("purge must be true or false, got '\(other.prefix(40))'")
            }
            let removed = try await administration.remove(name, purge: purge)
            return JSONResponse.make(RemovedTenant(name: name.rawValue, removed: removed))
        }
    }

    var administration: TenantAdministration {
        var administration = TenantAdministration(
            registry: tenants, provisioner: provisioner, sessions: sessions, vault: runner.vault, workers: workers,
            logger: logger)
        administration.fleet = fleet
        return administration
    }

    func requireOperator(_ context: CorralRequestContext) throws {
        guard try context.requireTenant() == .local else {
            throw CorralError(
                .permissionDenied, "tenants are managed by the service's operator",
                hint: "run `corral tenant` on the service's host")
        }
    }

    /// After a request made something for a network tenant: if the tenant was removed (or
    /// replaced by a new one of the same name) while the request ran, `undo` removes it again
    /// and the request fails, so that nothing made for a removed tenant is left to be inherited.
    package func keepOnlyIfTenantRemains(_ context: CorralRequestContext, undo: () async -> Void) async throws {
        guard let tenant = context.tenant, let token = context.tokenSHA256 else { return }
        guard try await tenants.isCurrent(tenant, tokenSHA256: token) else {
            await undo()
            throw CorralError(
                .unauthenticated, "tenant '\(tenant)' was removed while the request ran",
                hint: "ask the operator for a new token")
        }
    }

    /// Whether the request's tenant is still there (always, for the local tenant).
    func tenantRemains(_ context: CorralRequestContext) async -> Bool {
        guard let tenant = context.tenant, let token = context.tokenSHA256 else { return true }
        return (try? await tenants.isCurrent(tenant, tokenSHA256: token)) ?? true
    }
}
