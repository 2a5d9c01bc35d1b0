import ArgumentParser
import CorralCore
import CorralSession

struct SessionCreateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create an empty session; print its id.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Use this id instead of a new random one.")
    var id: String?

    @Option(
        name: .long, help: "Owning tenant (default: local; through a service, the tenant of CORRAL_TOKEN).")
    var tenant: String?

    @Option(name: .customLong("meta"), help: ArgumentHelp("Metadata, repeatable.", valueName: "KEY=VALUE"))
    var metadata: [String] = []

    @Flag(name: .long, help: "Print the session as JSON.")
    var json = false

    func run() async throws {
        var pairs: [String: String] = [:]
        for item in metadata {
            guard let equals = item.firstIndex(of: "="), equals != item.startIndex else {
                throw CorralError.invalidArgument("metadata '\(item)' is not KEY=VALUE", hint: "write --meta owner=ci")
            }
            pairs[String(item[..<equals])] = String(item[item.index(after: equals)...])
        }
        let id = try id.map(SessionID.init(validating:))
        let tenant = try tenant.map(TenantID.init(validating:))
        let backend = try await CommandContext(global).sessionBackend()
        defer { backend.shutdown() }
        let info = try await backend.create(id: id, tenant: tenant, metadata: pairs)
        if json {
            try CLIOutput.printJSON(info)
        } else {
            print(info.id)
        }
    }
}
