import ArgumentParser
import CorralCore
import Foundation

struct AgentStopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop",
        abstract: "Stop an agent's run in the corral service; print the session id.",
        discussion: """
            The session stays as it is: `corral agent wake ID` continues it. A run in a terminal of its own \
            (no service) stops with Ctrl-C there.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Session id.")
    var id: String

    func run() async throws {
        let session = try SessionID(validating: id)
        guard let client = try await CommandContext(global).serviceClient() else {
            throw CorralError(
                .unavailable, "no corral service answers, so no run of session \(session) is held by one",
                hint: "a run in a terminal stops with Ctrl-C there; or pass --server URL (CORRAL_SERVER)")
        }
        defer { client.shutdown() }
        let before = try await explainingMissingSession { try await client.harnessStatus(session) }
        _ = try await client.stopHarness(session)
        if before.state != "running" {
            FileHandle.standardError.write(Data("corral: session \(session) had no run going; nothing to stop\n".utf8))
        }
        print(session)
    }
}
