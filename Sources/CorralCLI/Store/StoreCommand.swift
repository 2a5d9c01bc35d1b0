import ArgumentParser
import CorralCore
import CorralService
import Foundation
import Logging

struct StoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Stores of sessions, tenants, worker tokens and the vault.",
        subcommands: [StoreCopyCommand.self])
}

struct StoreCopyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy",
        abstract: "Copy sessions, tenants, worker tokens and the vault from one store to another, then verify them.",
        discussion: """
            A store is a state directory, file:DIR (its sessions/, tenants.json, \
            worker-tokens.json and vault.sealed), or a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DB. \
            The vault is copied sealed: the target opens it with the same key. \
            Sessions keep their ids, tenants, times, epochs and every event; both stores are \
            then read back and each session's count and checksum compared. A copy run again \
            skips what is there already; something else under the same id or name in the \
            target is refused. Stop the services on both stores first.
            """)

    @Option(help: ArgumentHelp("Where to copy from: file:DIR or postgres://…", valueName: "STORE"))
    var from: String

    @Option(help: ArgumentHelp("Where to copy to: file:DIR or postgres://…", valueName: "STORE"))
    var to: String

    @Flag(help: "Print the report as JSON.")
    var json = false

    func run() async throws {
        let source = try StoreCopy.Location(parsing: from)
        let target = try StoreCopy.Location(parsing: to)
        var logger = Logger(label: "corral.store-copy")
        logger.logLevel = .warning
        let report = try await StoreCopy.run(from: source, to: target, logger: logger) { line in
            FileHandle.standardError.write(Data("corral: \(line)\n".utf8))
        }
        if json {
            try CLIOutput.printJSON(report)
        } else {
            print(
                "copied \(report.sessions) sessions (\(report.events) events; \(report.alreadyThere) were there already), "
                    + "\(report.tenants) tenants, \(report.workerTokens) worker tokens\(report.vault ? ", the sealed vault" : "") "
                    + "from \(source) to \(target)")
            print("verified: every session's event count and checksum match")
        }
    }
}
