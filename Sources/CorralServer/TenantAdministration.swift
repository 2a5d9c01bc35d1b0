import CorralAPI
import CorralCore
import CorralFleet
import CorralGateway
import CorralHost
import CorralSandbox
import CorralSession
import Foundation
import Logging

/// Adding and removing tenants, with what they own. The running service does it through its
/// unix socket (`/v1/tenants`, local tenant only), so that it also stops the tenant's harness
/// runs and forgets what it holds open; without a service, `corral tenant` does it on the
/// state directory itself. Both change `tenants.json` under its file lock, so either is safe
/// against the other and against itself.
///
/// Ownership is by name (a sandbox's container and record, a session's manifest), so a name
/// is only ever given out while nothing is owned under it: `add` refuses a name that still
/// owns something (an earlier tenant's leftovers), and `remove` refuses a tenant that owns
/// anything unless told to purge it. The token stops working before anything is counted or
/// removed, and a request that was under way when it stopped undoes what it made
/// (`keepOnlyIfTenantRemains`), so nothing made for the old tenant survives to be inherited.
public struct TenantAdministration: Sendable {
    public let registry: TenantRegistry
    let provisioner: Provisioner
    let sessions: (any SessionStore)?
    /// Where the tenant's credentials are; nil when there is no vault (nothing to own there).
    let vault: Vault?
    /// The service's harness runs; nil without a service.
    let workers: HarnessWorkers?
    /// The workers dialled in, whose sandboxes a tenant may own too; nil without any.
    var fleet: WorkerFleet?
    let logger: Logger

    public init(
        registry: TenantRegistry, provisioner: Provisioner, sessions: (any SessionStore)?, vault: Vault?,
        logger: Logger = Logger(label: "corral.tenants")
    ) {
        self.init(
            registry: registry, provisioner: provisioner, sessions: sessions, vault: vault, workers: nil,
            logger: logger)
    }

    init(
        registry: TenantRegistry, provisioner: Provisioner, sessions: (any SessionStore)?, vault: Vault?,
        workers: HarnessWorkers?, logger: Logger
    ) {
        self.registry = registry
        self.provisioner = provisioner
        self.sessions = sessions
        self.vault = vault
        self.workers = workers
        self.logger = logger
    }

    // MARK: What a tenant owns: the one place

    /// One kind of thing a tenant can own: how to list it and how to remove it.
    struct OwnedKind: Sendable {
        /// Plural, as in messages: "sandboxes".
        var name: String
        var list: @Sendable () async throws -> [String]
        var remove: @Sendable (String) async throws -> Void
    }

    /// Everything a tenant can own. `holdings`, `remove` and `add` go through this list only:
    /// a new kind of thing is one more entry here.
    func ownedKinds(of tenant: TenantID) -> [OwnedKind] {
        let provisioner = self.provisioner
        let fleet = self.fleet
        let sessions = self.sessions
        let vault = self.vault
        return [
            OwnedKind(
                name: "sandboxes",
                list: {
                    // The engine's view (what runs), and records whose container is gone.
                    var ids = Set(try await provisioner.list(tenant: tenant).map(\.id))
                    let records = try provisioner.records()
                    for id in records.ids() where (try? records.read(id))?.tenant == tenant { ids.insert(id) }
                    return ids.map(\.rawValue).sorted()
                },
                remove: { id in
                    let id = try SandboxID(validating: id)
                    do {
                        try await provisioner.remove(id, tenant: tenant)
                    } catch let error as CorralError where error.code == .notFound {
                        // A record whose container had gone: only the host's files were left.
                        try provisioner.records().remove(id)
                    } catch {
                        // Removed by someone else at the same moment (a request undoing what it
                        // made for the tenant): done once it is gone.
                        for _ in 0..<50 {
                            guard try await provisioner.list(tenant: tenant).contains(where: { $0.id == id }) else {
                                return
                            }
                            try await Task.sleep(for: .milliseconds(100))
                        }
                        throw error
                    }
                }),
            OwnedKind(
                name: "sandboxes on workers",
                list: { fleet?.sandboxes(of: tenant).map(\.rawValue).sorted() ?? [] },
                remove: { id in
                    let id = try SandboxID(validating: id)
                    guard let fleet else { return }
                    let route = fleet.route(id)
                    switch route {
                    case .worker(_, let link):
                        try await WorkerRoutingMiddleware.remove(WorkerSandbox(id: id, tenant: tenant), on: link)
                        fleet.forget(id)
                    case .down:
                        throw fleet.unreachable(id, route)
                            ?? CorralError(.unavailable, "sandbox \(id)'s worker is down")
                    case .lost, .local:
                        // Given up: its worker removes it when it comes back.
                        fleet.forget(id)
                    }
                }),
            OwnedKind(
                name: "sessions",
                list: { try await sessions?.list().filter { $0.tenant == tenant }.map(\.id.rawValue).sorted() ?? [] },
                remove: { id in
                    do {
                        try await sessions?.delete(try SessionID(validating: id))
                    } catch let error as CorralError where error.code == .notFound {}
                }),
            OwnedKind(
                name: "credentials",
                list: { try await vault?.list(tenant: tenant).map(\.name) ?? [] },
                remove: { name in
                    do {
                        try await vault?.remove(name: name, tenant: tenant)
                    } catch let error as CorralError where error.code == .notFound {}
                }),
        ]
    }

    /// What `tenant` owns, by kind; kinds it owns nothing of are left out.
    public func holdings(of tenant: TenantID) async throws -> TenantHoldings {
        var owned: [String: [String]] = [:]
        for kind in ownedKinds(of: tenant) {
            let items = try await kind.list()
            if !items.isEmpty { owned[kind.name] = items }
        }
        return TenantHoldings(owned: owned)
    }

    // MARK: Adding and removing

    /// Adds a tenant and returns its token, printed once.
    public func add(_ tenant: TenantID, groups: [String] = []) async throws -> String {
        try TenantRegistry.checkNotReserved(tenant)
        if try await registry.contains(tenant) {
            throw CorralError(
                .alreadyExists, "tenant '\(tenant)' exists already", hint: "pick another name, or remove it first")
        }
        let left = try await holdings(of: tenant)
        guard left.isEmpty else {
            throw CorralError(
                .conflict, "an earlier tenant named '\(tenant)' left \(left.summary); a new one would inherit them",
                hint: "remove them with `corral tenant rm \(tenant) --purge`, or pick another name")
        }
        return try await registry.add(tenant, groups: groups)
    }

    /// Removes a tenant. Without `purge` it is refused while the tenant owns anything, and the
    /// refusal names what; with it, everything the tenant owns is removed too. Returns what was
    /// removed. A reserved name (a stale entry) only loses its entry: what is owned under it
    /// is the system's, not the entry's.
    public func remove(_ tenant: TenantID, purge: Bool) async throws -> TenantHoldings {
        if TenantRegistry.isReserved(tenant) {
            guard !purge else {
                throw CorralError.invalidArgument(
                    "'\(tenant)' is a name the system uses: what is owned under it is not a tenant's to purge",
                    hint: "leave out --purge; `corral tenant rm \(tenant)` removes the stale token")
            }
            guard try await registry.remove(tenant) != nil else { throw CorralError.notFound("no tenant '\(tenant)'") }
            logger.info("removed a token stored under a reserved name", metadata: ["tenant": "\(tenant)"])
            return TenantHoldings(owned: [:])
        }
        if !purge {
            let owned = try await holdings(of: tenant)
            guard owned.isEmpty else { throw Self.stillOwns(tenant, owned) }
        }
        // The token stops first: from here on nothing new is made for this tenant (a request
        // already under way undoes what it makes), so what is counted next is everything.
        let entry = try await registry.remove(tenant)
        await workers?.stopAll(of: tenant)
        let owned = try await holdings(of: tenant)
        if entry == nil && owned.isEmpty { throw CorralError.notFound("no tenant '\(tenant)'") }
        guard purge else {
            guard owned.isEmpty else {
                // Something was made between the first count and the token's end.
                if let entry { try await registry.reinstate(entry) }
                throw Self.stillOwns(tenant, owned)
            }
            logger.info("tenant removed", metadata: ["tenant": "\(tenant)"])
            return owned
        }
        var failures: [String] = []
        for kind in ownedKinds(of: tenant) {
            for item in owned.owned[kind.name] ?? [] {
                do {
                    try await kind.remove(item)
                } catch {
                    failures.append("\(item): \(error)")
                }
            }
        }
        guard failures.isEmpty else {
            throw CorralError(
                .internalError,
                "tenant '\(tenant)' is removed, but \(failures.count) of what it owned could not be: \(failures.joined(separator: "; "))",
                hint: "run `corral tenant rm \(tenant) --purge` again once the cause is fixed")
        }
        logger.info("tenant purged", metadata: ["tenant": "\(tenant)", "removed": "\(owned.summary)"])
        return owned
    }

    static func stillOwns(_ tenant: TenantID, _ owned: TenantHoldings) -> CorralError {
        CorralError(
            .conflict, "tenant '\(tenant)' owns \(owned.detailed)",
            hint: "remove them first, or `corral tenant rm \(tenant) --purge` removes them with the tenant")
    }
}

extension TenantHoldings {
    /// `2 sandboxes and 1 session`.
    var summary: String {
        Self.join(owned.keys.sorted().map { kind in Self.count(owned[kind]?.count ?? 0, kind) })
    }

    /// `2 sandboxes (sb-1, sb-2) and 1 session (se-1)`, at most five names a kind.
    var detailed: String {
        Self.join(
            owned.keys.sorted().map { kind in
                let items = owned[kind] ?? []
                let names = items.prefix(5).joined(separator: ", ") + (items.count > 5 ? ", ..." : "")
                return "\(Self.count(items.count, kind)) (\(names))"
            })
    }

    static func count(_ number: Int, _ kind: String) -> String {
        guard number == 1 else { return "\(number) \(kind)" }
        switch kind {
        case "sandboxes": return "1 sandbox"
        case "sandboxes on workers": return "1 sandbox on a worker"
        default: return "1 \(kind.hasSuffix("s") ? String(kind.dropLast()) : kind)"
        }
    }

    static func join(_ parts: [String]) -> String {
        switch parts.count {
        case 0: "nothing"
        case 1: parts[0]
        default: parts.dropLast().joined(separator: ", ") + " and " + (parts.last ?? "")
        }
    }
}
