import ArgumentParser
import CorralCore
import CorralSession

struct SessionCreateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create an empty session; print its id.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Use this id instead of a new random one.")
    var id: String?

    @Option(name: .long, help: "Owning tenant.")
    var tenant: String = TenantID.local.rawValue

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
        let info = try await global.sessionStore().create(
            id: try id.map(SessionID.init(validating:)), tenant: try TenantID(validating: tenant), metadata: pairs)
        if json {
            try CLIOutput.printJSON(info)
        } else {
            print(info.id)
        }
    }
}
