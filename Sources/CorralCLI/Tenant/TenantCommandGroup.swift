import ArgumentParser
import CorralCore
import CorralServer
import Foundation

struct TenantCommandGroup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenant",
        abstract: "Tenants of the service and their bearer tokens.",
        subcommands: [TenantAdd.self, TenantList.self, TenantRemove.self]
    )
}

struct TenantAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add a tenant and print its bearer token, once: only its hash is kept.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The tenant's name (a-z, 0-9, '-', '_').")
    var name: String

    func run() async throws {
        let tenant = try TenantID(validating: name)
        let registry = TenantRegistry(stateDirectory: try CommandContext(global).stateDirectory())
        print(try registry.add(tenant))
    }
}

struct TenantList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List tenants (never their tokens).")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON.")
    var json = false

    struct Row: Encodable {
        var name: String
        var created: Date
    }

    func run() async throws {
        let registry = TenantRegistry(stateDirectory: try CommandContext(global).stateDirectory())
        let rows = try registry.list().map { Row(name: $0.id.rawValue, created: $0.created) }
        if json {
            try CLIOutput.printJSON(rows)
        } else {
            CLIOutput.printTable(
                [["NAME", "CREATED"]] + rows.map { [$0.name, ISO8601DateFormatter().string(from: $0.created)] })
        }
    }
}

struct TenantRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm", abstract: "Remove a tenant; its token stops working.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The tenant's name.")
    var name: String

    func run() async throws {
        let tenant = try TenantID(validating: name)
        try TenantRegistry(stateDirectory: try CommandContext(global).stateDirectory()).remove(tenant)
        print(tenant)
    }
}
