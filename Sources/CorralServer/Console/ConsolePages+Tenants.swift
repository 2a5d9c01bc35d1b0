import CorralCore
import CorralFleet
import CorralHost
import CorralSandbox
import Foundation
import Hummingbird

extension CorralServer {
    func addConsoleTenantRoutes(to routes: RouterGroup<CorralRequestContext>, auth: AuthMode) {
        routes.get("tenants") { request, context -> Response in
            let access = try await consoleAccess(request, context, auth: auth)
            guard access.viewer.isOperator else {
                throw ConsoleRefusal.forbidden("Tenants are the operator's to see.")
            }
            let region = try await tenantTable()
            if Self.fragment(request) == "tenants-live" { return ConsoleHTTP.page(region) }
            let body: HTML = """
                <h1>Tenants</h1>
                <div id="tenants-live" data-refresh="10000">\(region)</div>
                """
            return ConsoleHTTP.page(
                ConsoleLayout(title: "Tenants", section: .tenants, access: access, body: body).render())
        }
    }

    /// Every tenant with its quotas and what it uses; the operator's own (`local`) first.
    func tenantTable() async throws -> HTML {
        let registered = try await tenants.list()
        let sandboxes = (try? await provisioner.list()) ?? []
        let sessionList = (try? await sessions?.list()) ?? []
        let running = await workers.runningByTenant()
        let names: [(TenantID, Date?)] = [(.local, nil)] + registered.map { ($0.id, $0.created) }
        // One read of the vault for the whole table.
        let credentialCounts = Dictionary(grouping: (try? await runner.vault?.list()) ?? [], by: \.tenant)
            .mapValues(\.count)
        let rows: [HTML] = names.map { tenant, created in
            // The quota counts a tenant's sandboxes on workers too (`sandboxCount(of:)`).
            let heldSandboxes = sandboxes.filter { $0.tenant == tenant }.count + (fleet?.count(of: tenant) ?? 0)
            let heldSessions = sessionList.filter { $0.tenant == tenant }.count
            let credentials = credentialCounts[tenant] ?? 0
            let isLocal = tenant == .local
            let sandboxQuota = isLocal ? "" : " / \(configuration.sandboxesPerTenant)"
            let sessionQuota = isLocal ? "" : " / \(configuration.sessionsPerTenant)"
            let name: HTML = isLocal ? "local <span class=\"sub\">the operator (unix socket)</span>" : "\(tenant)"
            let reserved: HTML =
                !isLocal && TenantRegistry.isReserved(tenant)
                ? "<span class=\"sub\">reserved name: its token is refused; remove it</span>" : ""
            return """
                <tr><td>\(name)\(reserved)</td><td>\(created.map { Display.dateTime($0) } ?? "–")</td>\
                <td class="num">\(heldSandboxes)\(sandboxQuota)</td><td class="num">\(heldSessions)\(sessionQuota)</td>\
                <td class="num">\(running[tenant] ?? 0)</td><td class="num">\(credentials)</td>\
                <td><a href="\(ConsoleHTTP.link("/console/sessions", [("tenant", tenant.rawValue)]))">sessions</a></td></tr>
                """
        }
        return """
            <table><caption class="muted">Quotas from [limits] in corral.toml; the operator has none</caption><thead><tr>\
            <th scope="col">Tenant</th><th scope="col">Created (UTC)</th><th scope="col" class="num">Sandboxes / quota</th>\
            <th scope="col" class="num">Sessions / quota</th><th scope="col" class="num">Agents running</th>\
            <th scope="col" class="num">Credentials</th><th scope="col"></th></tr></thead>
            <tbody>\(rows)</tbody></table>
            """
    }
}

extension HarnessWorkers {
    /// How many runs each tenant has going.
    func runningByTenant() -> [TenantID: Int] {
        var counts: [TenantID: Int] = [:]
        for tenant in runningTenants { counts[tenant, default: 0] += 1 }
        return counts
    }
}
