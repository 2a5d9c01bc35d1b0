import ArgumentParser
import CorralCore
import CorralSandbox
import Foundation

struct SandboxList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List sandboxes.")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        let backend = try await CommandContext(global).backend()
        defer { backend.shutdown() }
        let sandboxes = try await backend.list()
        if json {
            try CLIOutput.printJSON(sandboxes)
            return
        }
        // A WORKER column once any sandbox runs on a worker (a control plane with workers).
        let workers = sandboxes.contains { $0.worker != nil }
        var rows = [["ID", "IMAGE", "RUNTIME", "STATE", "AGE", "EXPIRES IN", "LABELS"] + (workers ? ["WORKER"] : [])]
        let now = Date()
        for info in sandboxes {
            rows.append(
                [
                    info.id.rawValue, info.image, info.runtime, info.state,
                    info.created.map { CLIOutput.age(now.timeIntervalSince($0)) } ?? "-",
                    info.expires.map { CLIOutput.age($0.timeIntervalSince(now)) } ?? "-",
                    info.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","),
                ] + (workers ? [info.worker ?? "(this host)"] : []))
        }
        CLIOutput.printTable(rows)
    }
}
