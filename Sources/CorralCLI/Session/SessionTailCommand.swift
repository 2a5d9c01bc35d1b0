import ArgumentParser
import CorralCore
import CorralSession

struct SessionTailCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tail", abstract: "Print a session's new events as they are appended, until interrupted.",
        discussion: """
            Through a service the events arrive as server-sent events; when the stream drops (the service \
            restarts, the connection breaks) the tail reconnects and goes on after the last event printed, for \
            up to a minute.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Session id.")
    var id: String

    @Option(name: .long, help: "First seq to print (default: the next one appended).")
    var from: UInt64?

    @Flag(name: .long, help: "One JSON object per line.")
    var json = false

    func run() async throws {
        let session = try SessionID(validating: id)
        let backend = try await CommandContext(global).sessionBackend()
        defer { backend.shutdown() }
        var start = from ?? 0
        if from == nil { start = try await backend.session(session).nextSeq }
        let json = self.json
        try await backend.follow(session, from: start) { event in
            var output = StandardOutput()
            output.line(json ? event.jsonLine : SessionText.line(event))
            output.flush()
            return true
        }
    }
}
