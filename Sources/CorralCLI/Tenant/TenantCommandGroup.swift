import ArgumentParser
import CorralAPI
import CorralCore
import CorralGateway
import CorralServer
import CorralService
import DockerEngine
import Foundation

struct TenantCommandGroup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenant",
        abstract: "Tenants of the service and their bearer tokens.",
        discussion: """
            These act on the state directory: through the service answering on $STATE/corral.sock \
            when one runs (it also stops a removed tenant's agent runs), else on the files \
            themselves; never through --server. Names the system uses are reserved: \
            \(TenantRegistry.reservedNames.sorted().joined(separator: ", ")), and names starting \
            with \(TenantRegistry.reservedPrefixes.joined(separator: " or ")).
            """,
        subcommands: [TenantAdd.self, TenantList.self, TenantRemove.self]
    )
}

/// Where a tenant command is carried out: the service on the state directory's socket, or
/// the state directory's files (and the engine) in this process.
enum TenantBackend {
    case service(CorralClient)
    case files(TenantAdministration, DockerEngineClient)

    static func make(_ global: GlobalOptions) async throws -> TenantBackend {
        if global.server != nil {
            throw CorralError.invalidArgument(
                "tenants cannot be managed through --server",
                hint: "run `corral tenant` on the service's host; it uses the service's state directory")
        }
        let context = CommandContext(global)
        let socket = try context.stateDirectory().appendingPathComponent("corral.sock").path
        if UnixSocketPath.accepts(socket) {
            return .service(try CorralClient(endpoint: .unixSocket(path: socket)))
        }
        let configuration = try context.configuration(explicit: nil)
        let engine = try context.engine(configuration: configuration)
        let state = try context.stateDirectory()
        let sessions = try await global.sessionStore()
        // Credentials are owned too; with no vault yet there are none (and no key is made).
        let vault = try await Vault.existing(
            configuration: Vault.Configuration(stateDirectory: state),
            storage: SessionStoreSelection.vaultStorage(sessions))
        let administration = TenantAdministration(
            registry: TenantRegistry(store: sessions, stateDirectory: state),
            provisioner: try context.provisioner(engine: engine, templates: configuration?.templates ?? []),
            sessions: sessions, vault: vault, logger: context.logger)
        return .files(administration, engine)
    }

    func shutdown() {
        switch self {
        case .service(let client): client.shutdown()
        case .files(_, let engine): engine.shutdown()
        }
    }
}

struct TenantAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Add a tenant and print its bearer token, once: only its hash is kept.",
        discussion: "Refused for a reserved name, and for a name an earlier tenant left sandboxes or sessions under.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The tenant's name (a-z, 0-9, '-', '_').")
    var name: String

    @Option(
        name: .customLong("group"),
        help: "A worker group its sandboxes may run in (repeatable); none: the default group.")
    var groups: [String] = []

    func run() async throws {
        let tenant = try TenantID(validating: name)
        // Refused before anything is looked at, with or without a service.
        try TenantRegistry.checkNotReserved(tenant)
        for group in groups { try WorkerGroup.validate(group) }
        let backend = try await TenantBackend.make(global)
        defer { backend.shutdown() }
        switch backend {
        case .service(let client): print(try await client.addTenant(tenant, groups: groups).token)
        case .files(let administration, _): print(try await administration.add(tenant, groups: groups))
        }
    }
}

struct TenantList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List tenants (never their tokens).")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        let tenants = try await global.withSessionStore {
            try await TenantRegistry(store: $0, stateDirectory: $1).list()
        }
        let rows = tenants.map {
            TenantSummary(
                name: $0.id.rawValue, created: $0.created, reserved: TenantRegistry.isReserved($0.id) ? true : nil,
                groups: $0.groups)
        }
        if json {
            try CLIOutput.printJSON(rows)
        } else {
            CLIOutput.printTable(
                [["NAME", "GROUPS", "CREATED"]]
                    + rows.map {
                        [
                            $0.name + ($0.reserved == true ? " (reserved name: token refused)" : ""),
                            ($0.groups ?? [WorkerGroup.defaultName]).joined(separator: ","),
                            ISO8601DateFormatter().string(from: $0.created),
                        ]
                    })
        }
        for row in rows where row.reserved == true {
            FileHandle.standardError.write(
                Data(
                    "corral: tenant '\(row.name)' has a reserved name; its token is refused\nhint: remove it with `corral tenant rm \(row.name)`\n"
                        .utf8))
        }
    }
}

struct TenantRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove a tenant; its token stops working.",
        discussion: """
            Refused while the tenant owns sandboxes or sessions, which the error names; --purge \
            removes them with it. The token stops working before anything is removed.
            """)

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Also remove everything the tenant owns: its sandboxes and sessions.")
    var purge = false

    @Argument(help: "The tenant's name.")
    var name: String

    func run() async throws {
        let tenant = try TenantID(validating: name)
        let backend = try await TenantBackend.make(global)
        defer { backend.shutdown() }
        let removed: TenantHoldings
        switch backend {
        case .service(let client): removed = try await client.removeTenant(tenant, purge: purge).removed
        case .files(let administration, _): removed = try await administration.remove(tenant, purge: purge)
        }
        print(tenant)
        for (kind, items) in removed.owned.sorted(by: { $0.key < $1.key }) where !items.isEmpty {
            print("removed \(kind): \(items.joined(separator: " "))")
        }
    }
}
