import ArgumentParser
import CorralCore
import CorralSandbox

struct SandboxRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm", abstract: "Remove sandboxes and their workspaces.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Sandbox ids.")
    var ids: [String]

    func validate() throws {
        guard !ids.isEmpty else { throw ValidationError("give at least one sandbox id") }
    }

    func run() async throws {
        let sandboxIDs = try ids.map(parseSandboxID)
        let backend = try await CommandContext(global).backend()
        defer { backend.shutdown() }
        var failures: [CorralError] = []
        for id in sandboxIDs {
            do {
                try await backend.remove(id)
                print(id)
            } catch let error as CorralError {
                CLIOutput.printError(error)
                failures.append(error)
            }
        }
        if !failures.isEmpty { throw ExitCode(1) }
    }
}
