import ArgumentParser
import CorralCore
import CorralSession

struct SessionTailCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tail", abstract: "Print a session's new events as they are appended, until interrupted.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Session id.")
    var id: String

    @Option(name: .long, help: "First seq to print (default: the next one appended).")
    var from: UInt64?

    @Flag(name: .long, help: "One JSON object per line.")
    var json = false

    func run() async throws {
        let session = try SessionID(validating: id)
        let store = global.sessionStore()
        var start = from ?? 0
        if from == nil { start = try await store.session(session).nextSeq }
        var output = StandardOutput()
        var iterator = store.subscribe(session, from: start).makeAsyncIterator()
        while let event = try await iterator.next() {
            output.line(json ? event.jsonLine : SessionText.line(event))
            output.flush()
        }
    }
}
