import CorralAPI
import CorralCore
import CorralHost
import CorralService
import CorralSession
import Crypto
import Foundation
import Synchronization

/// Tenants and their bearer tokens, kept in a `RecordList`: `$STATE/tenants.json` by default,
/// or the PostgreSQL store's list `tenants`, which every replica of the service shares. Only a
/// token's SHA-256 is stored: the token itself is printed once, when the tenant is added, and
/// never again.
public final class TenantRegistry: TenantTokens {
    public struct Tenant: Codable, Sendable, Hashable {
        public var id: TenantID
        public var tokenSHA256: String
        public var created: Date
        /// The worker groups its sandboxes may run in; nil or empty: the default group.
        public var groups: [String]?

        /// Where its sandboxes may be placed.
        public var placementGroups: [String] {
            guard let groups, !groups.isEmpty else { return [WorkerGroup.defaultName] }
            return groups
        }
    }

    /// What a presented bearer token turned out to be.
    public typealias Authentication = TenantAuthentication

    private let store: any RecordList<Tenant>
    /// Where the tenants are kept, for messages.
    public var location: String { store.location }

    /// The tenants in `$STATE/tenants.json`.
    public convenience init(stateDirectory: URL) {
        self.init(
            list: LockedJSONFile(file: stateDirectory.appendingPathComponent("tenants.json"), what: "tenants file"))
    }

    package init(list: any RecordList<Tenant>) {
        store = list
    }

    /// The tenants where the store keeps the control plane's state: the PostgreSQL store's
    /// list when sessions are there, else `$STATE/tenants.json`.
    public convenience init(store: any SessionStore, stateDirectory: URL) {
        self.init(
            list: SessionStoreSelection.recordList(
                "tenants", what: "tenants file", store: store, stateDirectory: stateDirectory))
    }

    // MARK: Names the system uses

    /// Names no tenant may have: `local` is the operator on the host (the unix socket, the
    /// command line without a service); the others are names the system has or will have
    /// for itself (`default`: the default worker group; `all`/`none`: selectors in commands
    /// and policies; `pool`, `worker`, `service`: parts of the system). docs/architecture.md
    /// lists them.
    public static let reservedNames: Set<String> = [
        "local", "operator", "system", "default", "corral", "all", "none", "root", "admin", "anonymous", "public",
        "pool", "worker", "service", "internal", "unknown",
    ]
    /// Prefixes kept for the system's own names.
    public static let reservedPrefixes = ["corral-", "system-"]

    public static func isReserved(_ id: TenantID) -> Bool {
        reservedNames.contains(id.rawValue) || reservedPrefixes.contains { id.rawValue.hasPrefix($0) }
    }

    /// Refuses a reserved name with one line and a hint.
    public static func checkNotReserved(_ id: TenantID) throws {
        guard isReserved(id) else { return }
        throw CorralError.invalidArgument(
            "'\(id)' is a name the system uses and cannot be a tenant",
            hint: "pick another name; reserved: \(reservedNames.sorted().joined(separator: ", ")) "
                + "and names starting with \(reservedPrefixes.joined(separator: " or "))")
    }

    // MARK: Changes

    /// Adds a tenant and returns its token (`corral_` and 43 base64url characters). `groups`
    /// binds its sandboxes to those worker groups (none: the default group).
    public func add(_ id: TenantID, groups: [String] = []) async throws -> String {
        try Self.checkNotReserved(id)
        for group in groups { try WorkerGroup.validate(group) }
        let token = BearerToken.make()
        try await store.modify { tenants in
            guard !tenants.contains(where: { $0.id == id }) else {
                throw CorralError(
                    .alreadyExists, "tenant '\(id)' exists already", hint: "pick another name, or remove it first")
            }
            tenants.append(
                Tenant(
                    id: id, tokenSHA256: BearerToken.hash(token), created: Date(),
                    groups: groups.isEmpty ? nil : groups))
        }
        return token
    }

    /// Removes a tenant; its token stops working at once. Returns the entry, or nil when
    /// there was none.
    @discardableResult
    public func remove(_ id: TenantID) async throws -> Tenant? {
        var removed: Tenant?
        try await store.modify { tenants in
            removed = tenants.first { $0.id == id }
            tenants.removeAll { $0.id == id }
        }
        return removed
    }

    /// Puts back an entry `remove` returned (a removal that had to be undone), unless the
    /// name was taken meanwhile.
    public func reinstate(_ tenant: Tenant) async throws {
        try await store.modify { tenants in
            if !tenants.contains(where: { $0.id == tenant.id }) { tenants.append(tenant) }
        }
    }

    public func list() async throws -> [Tenant] { try await store.load() }

    public func contains(_ id: TenantID) async throws -> Bool { try await store.load().contains { $0.id == id } }

    /// The worker groups a tenant's sandboxes may run in: the local tenant and an unknown or
    /// unbound one use the default group.
    public func placementGroups(of id: TenantID) async throws -> [String] {
        try await store.load().first { $0.id == id }?.placementGroups ?? [WorkerGroup.defaultName]
    }

    // MARK: Tokens

    /// What a bearer token belongs to. Compares hashes in constant time.
    public func authenticate(token: String) async throws -> Authentication {
        guard let match = BearerToken.match(token, in: try await store.load(), hash: \.tokenSHA256) else {
            return .unknown
        }
        if Self.isReserved(match.id) { return .reserved(match.id) }
        return .tenant(match.id, tokenSHA256: match.tokenSHA256)
    }

    /// The tenant a bearer token belongs to, or nil (a reserved name's token included).
    public func tenant(forToken token: String) async throws -> TenantID? {
        if case .tenant(let id, _) = try await authenticate(token: token) { return id }
        return nil
    }

    /// Whether the tenant that presented a token with this hash is still there, with that
    /// token: false once it was removed, also when a new tenant of the same name came since.
    public func isCurrent(_ id: TenantID, tokenSHA256: String) async throws -> Bool {
        try await store.load().contains { $0.id == id && $0.tokenSHA256 == tokenSHA256 }
    }
}
