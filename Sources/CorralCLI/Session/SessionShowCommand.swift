import ArgumentParser
import CorralCore
import CorralSession

struct SessionShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Print a session's events.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Session id.")
    var id: String

    @Option(name: .long, help: "First seq to print.")
    var from: UInt64 = 1

    @Option(name: .long, help: "Print at most this many events.")
    var limit: Int?

    @Flag(name: .long, help: "One JSON object per line: {seq, id, type, time, epoch, data}.")
    var json = false

    func run() async throws {
        let session = try SessionID(validating: id)
        if let limit, limit < 0 { throw CorralError.invalidArgument("--limit cannot be negative") }
        let backend = try await CommandContext(global).sessionBackend()
        defer { backend.shutdown() }
        _ = try await backend.session(session)  // an unknown session is an error, not an empty listing
        var output = StandardOutput()
        try await backend.read(session, from: from, limit: limit) { events in
            for event in events { output.line(json ? event.jsonLine : SessionText.line(event)) }
        }
        output.flush()
    }
}
