import CorralCore
import Foundation

/// What a tenant owns, by kind (`sandboxes`, `sessions`; later `credentials`), as names.
public struct TenantHoldings: Codable, Sendable, Hashable {
    public var owned: [String: [String]]

    public init(owned: [String: [String]]) {
        self.owned = owned
    }

    public var isEmpty: Bool { owned.values.allSatisfy(\.isEmpty) }
}

/// One tenant, as `GET /v1/tenants` lists it: never its token.
public struct TenantSummary: Codable, Sendable, Hashable {
    public var name: String
    public var created: Date
    /// The name is one the system uses: the entry is stale and its token is refused.
    public var reserved: Bool?
    /// The worker groups its sandboxes may run in; absent: the default group.
    public var groups: [String]?

    public init(name: String, created: Date, reserved: Bool? = nil, groups: [String]? = nil) {
        self.name = name
        self.created = created
        self.reserved = reserved
        self.groups = groups
    }
}

/// `POST /v1/tenants`.
public struct AddTenantRequest: Codable, Sendable, Hashable {
    public var name: String
    /// Worker groups to bind it to (`corral tenant add NAME --group G`); absent: the default.
    public var groups: [String]?

    public init(name: String, groups: [String]? = nil) {
        self.name = name
        self.groups = groups
    }
}

/// What `POST /v1/tenants` returns: the bearer token, shown this once.
public struct AddedTenant: Codable, Sendable, Hashable {
    public var name: String
    public var token: String

    public init(name: String, token: String) {
        self.name = name
        self.token = token
    }
}

/// What `DELETE /v1/tenants/{name}` returns: what was removed with the tenant.
public struct RemovedTenant: Codable, Sendable, Hashable {
    public var name: String
    public var removed: TenantHoldings

    public init(name: String, removed: TenantHoldings) {
        self.name = name
        self.removed = removed
    }
}

extension CorralClient {
    public func listTenants() async throws -> [TenantSummary] {
        try await call(.get, "/v1/tenants")
    }

    public func addTenant(_ name: TenantID, groups: [String] = []) async throws -> AddedTenant {
        try await call(
            .post, "/v1/tenants", body: AddTenantRequest(name: name.rawValue, groups: groups.isEmpty ? nil : groups))
    }

    public func removeTenant(_ name: TenantID, purge: Bool) async throws -> RemovedTenant {
        try await call(.delete, "/v1/tenants/\(name)" + (purge ? "?purge=true" : ""))
    }
}
