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

    func run() async throws {
        try global.openVault().remove(name: name)
        print("removed \(name)")
    }
}
