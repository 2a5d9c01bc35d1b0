import ArgumentParser
import CorralCore
import CorralGateway
import Foundation

struct VaultListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List credentials by name and scope; values are never shown."
    )

    @OptionGroup var global: GlobalOptions

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    @Option(name: .long, help: "Only this tenant's credentials.")
    var tenant: String?

    struct Row: Encodable {
        var name: String
        var tenant: String
        var scope: String
        var username: String
        var created: Date
    }

    func run() async throws {
        let owner = try tenant.map { try TenantID(validating: $0) }
        let entries = try await global.withVault { vault in
            if let owner { return try await vault.list(tenant: owner) }
            return try await vault.list()
        }
        let rows = entries.map {
            Row(
                name: $0.name, tenant: $0.tenant.rawValue, scope: $0.scope.description, username: $0.username,
                created: $0.created)
        }
        if json {
            try CLIOutput.printJSON(rows)
            return
        }
        guard !rows.isEmpty else {
            print(
                "no credentials\(tenant.map { " for tenant \($0)" } ?? ""); store one with `corral vault put NAME --scope HOST[/OWNER[/REPO]]`"
            )
            return
        }
        let tenantWidth = max(6, rows.map(\.tenant.count).max() ?? 0)
        let nameWidth = max(4, rows.map(\.name.count).max() ?? 0)
        let scopeWidth = max(5, rows.map(\.scope.count).max() ?? 0)
        func pad(_ text: String, _ width: Int) -> String {
            text + String(repeating: " ", count: max(0, width - text.count))
        }
        print("\(pad("TENANT", tenantWidth))  \(pad("NAME", nameWidth))  \(pad("SCOPE", scopeWidth))  USERNAME")
        for row in rows {
            print(
                "\(pad(row.tenant, tenantWidth))  \(pad(row.name, nameWidth))  \(pad(row.scope, scopeWidth))  \(row.username)"
            )
        }
    }
}
