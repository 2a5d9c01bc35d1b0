import ArgumentParser
import CorralCore
import CorralSession

struct SessionWakeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wake",
        abstract: "Take a session over: a new lease epoch; writers with an older one are refused from now on.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Session id.")
    var id: String

    @Flag(name: .long, help: "Print the lease as JSON.")
    var json = false

    func run() async throws {
        let session = try SessionID(validating: id)
        let backend = try await CommandContext(global).sessionBackend()
        defer { backend.shutdown() }
        let lease = try await backend.wake(session)
        if json {
            try CLIOutput.printJSON(lease)
        } else {
            print(lease.epoch)
        }
    }
}
