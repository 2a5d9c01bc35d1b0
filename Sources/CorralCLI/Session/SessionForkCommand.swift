import ArgumentParser
import CorralCore
import CorralSession

struct SessionForkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fork", abstract: "Make a new session holding a session's events up to a seq; print its id.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Session to fork.")
    var id: String

    @Option(name: .long, help: "Last seq the fork shares (0 for none).")
    var at: UInt64

    @Option(name: .customLong("id"), help: "Id of the new session (default: a new random one).")
    var newID: String?

    @Flag(name: .long, help: "Print the new session as JSON.")
    var json = false

    func run() async throws {
        let session = try SessionID(validating: id)
        let newID = try newID.map(SessionID.init(validating:))
        let backend = try await CommandContext(global).sessionBackend()
        defer { backend.shutdown() }
        let info = try await backend.fork(session, at: at, newID: newID)
        if json {
            try CLIOutput.printJSON(info)
        } else {
            print(info.id)
        }
    }
}
