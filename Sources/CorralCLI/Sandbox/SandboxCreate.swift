import ArgumentParser
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
        let context = CommandContext(global)
        let provisioner = try options.provisioner(context)
        let sandbox = try await provisioner.provision(request)
        if json {
            try CLIOutput.printJSON(CreatedSandbox(sandbox: sandbox))
        } else {
            print(sandbox.id)
        }
    }
}

/// The JSON `sandbox create --json` prints.
struct CreatedSandbox: Encodable {
    var id: String
    var path: String
    var phases: [String: Double]
    var totalMilliseconds: Double

    init(sandbox: Sandbox) {
        id = sandbox.id.rawValue
        path = sandbox.provisioning?.path.rawValue ?? "cold"
        phases = sandbox.provisioning?.phases ?? [:]
        totalMilliseconds = sandbox.provisioning?.totalMilliseconds ?? 0
    }
}
