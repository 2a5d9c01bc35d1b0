import ArgumentParser
import CorralCore
import CorralGateway

struct VaultRemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove a credential."
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The credential's name.")
    var name: String

    @Option(name: .long, help: "The tenant it belongs to (default: local).")
    var tenant: String = TenantID.local.rawValue

    func run() async throws {
        let owner = try TenantID(validating: tenant)
        try await global.withVault { try await $0.remove(name: name, tenant: owner) }
        print("removed \(name) (tenant \(owner))")
    }
}
