import ArgumentParser
import CorralAPI
import CorralCore
import CorralSandbox
import Foundation

struct SandboxCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Provision a hardened sandbox and print its id.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: SandboxCreateOptions

    @Flag(help: "Print a JSON object with the id, the path taken (warm or cold) and phase timings.")
    var json = false

    func run() async throws {
        let request = try options.request()
        let backend = try await CommandContext(global).backend(config: options.config)
        defer { backend.shutdown() }
        let created = try await backend.create(request)
        if json {
            try CLIOutput.printJSON(created)
        } else {
            print(created.id)
        }
    }
}
