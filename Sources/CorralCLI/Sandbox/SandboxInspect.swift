import ArgumentParser
import CorralCore
import CorralSandbox

struct SandboxInspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show a sandbox as JSON.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The sandbox id.")
    var id: String

    func run() async throws {
        let sandboxID = try parseSandboxID(id)
        let provisioner = try CommandContext(global).provisioner()
        try CLIOutput.printJSON(try await provisioner.handle(sandboxID).info())
    }
}
