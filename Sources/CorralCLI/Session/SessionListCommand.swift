import ArgumentParser
import CorralCore
import CorralSession
import Foundation

struct SessionListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List sessions.")

    @OptionGroup var global: GlobalOptions

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    func run() async throws {
        let backend = try await CommandContext(global).sessionBackend()
        defer { backend.shutdown() }
        let sessions = try await backend.list()
        if json {
            try CLIOutput.printJSON(sessions)
            return
        }
        var rows = [["ID", "HEAD", "EPOCH", "TENANT", "CREATED", "FORKED FROM", "PROBLEM"]]
        for info in sessions {
            rows.append([
                info.id.rawValue, String(info.head), String(info.epoch), info.tenant.rawValue,
                info.created.formatted(.iso8601),
                info.forkedFrom.map { "\($0.session)@\($0.seq)" } ?? "", info.problem ?? "",
            ])
        }
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            let cells = row.enumerated().map { $1 + String(repeating: " ", count: widths[$0] - $1.count) }
            var line = cells.joined(separator: "  ")
            while line.last == " " { line.removeLast() }
            print(line)
        }
    }
}
