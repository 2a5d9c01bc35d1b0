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
        let backend = try await CommandContext(global).backend()
        defer { backend.shutdown() }
        try CLIOutput.printJSON(try await backend.info(sandboxID))
    }
}
