import ArgumentParser
import CorralCore
import CorralSandbox
import Foundation

struct PoolDrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain",
        abstract: "Remove idle and half-made pool members (claimed sandboxes stay).",
        discussion: "Stop `corral serve` first, or it refills the pool at once.")

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("Only this template's pool.", valueName: "NAME"))
    var template: String?

    func run() async throws {
        let name = try template.map { try TemplateName(validating: $0) }
        let provisioner = try CommandContext(global).provisioner()
        let removed = try await provisioner.drainPools(template: name)
        for id in removed { print(id) }
    }
}
