import CorralCore
import CorralGateway
import CorralSandbox
import CorralSessionPostgres
import Foundation
import TOMLKit

extension CorralConfiguration {
    /// Reads corral.toml from `file`.
    public static func load(file: URL) throws -> CorralConfiguration {
        let text: String
        do {
            text = try String(contentsOf: file, encoding: .utf8)
        } catch {
            throw CorralError(
                .notFound, "cannot read the configuration file \(file.path)",
                hint: "pass --config FILE, set CORRAL_CONFIG, or see deploy/corral.example.toml", underlying: error)
        }
        return try parse(text, source: file.path)
    }

    /// Parses corral.toml. Unknown keys are refused, so a misspelt setting is not silently
    /// ignored; every error names the file, and the template when it is in one.
    public static func parse(_ text: String, source: String = "corral.toml") throws -> CorralConfiguration {
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw CorralError(
                .invalidArgument,
                "\(source): not valid TOML at line \(error.source.begin.line), column \(error.source.begin.column): \(error.description)"
            )
        } catch {
            throw CorralError(.invalidArgument, "\(source): not valid TOML", underlying: error)
        }
        var configuration = CorralConfiguration()
        configuration.source = source
        let top = TableReader(root, path: "", source: source)
        try top.allowOnly(["engine", "service", "server", "limits", "templates", "gateway", "store", "workers"])
        if let store = try top.table("store") {
            try store.allowOnly(["url", "run_lease"])
            if let value = try store.duration("run_lease") {
                guard value >= .seconds(1), value <= .seconds(3600) else {
                    throw CorralError.invalidArgument(
                        "\(source): [store] run_lease must be between 1s and 1h", hint: "the default is 30s")
                }
                configuration.store.runLease = value
            }
            if let url = try store.string("url"), !url.isEmpty {
                do {
                    _ = try PostgresStoreURL(parsing: url)
                } catch let error as CorralError {
                    throw CorralError(.invalidArgument, "\(source): [store] url: \(error.message)", hint: error.hint)
                }
                configuration.store.url = url
            }
        }
        if let gateway = try top.table("gateway") {
            configuration.gateway = try parseGateway(gateway)
        }
        if let server = try top.table("server") {
            try server.allowOnly(["listen", "socket", "header_timeout", "idle_timeout", "shutdown_timeout"])
            if let listen = try server.string("listen") { configuration.server.listen = listen.isEmpty ? nil : listen }
            configuration.server.socket = try server.string("socket")
            if let value = try server.duration("header_timeout") {
                guard value <= CorralConfiguration.Server.maximumHeaderTimeout else {
                    throw CorralError.invalidArgument(
                        "\(source): [server] header_timeout is \(value.compactDescription); it may be at most 30s",
                        hint: "a request head is a few hundred bytes: a client that needs longer is stalling")
                }
                configuration.server.headerTimeout = value
            }
            if let value = try server.duration("idle_timeout") { configuration.server.idleTimeout = value }
            if let value = try server.duration("shutdown_timeout") { configuration.server.shutdownTimeout = value }
        }
        if let limits = try top.table("limits") {
            try limits.allowOnly(["sandboxes_per_tenant", "sessions_per_tenant", "max_archive_size"])
            if let value = try limits.integer("sandboxes_per_tenant") {
                configuration.limits.sandboxesPerTenant = value
            }
            if let value = try limits.integer("sessions_per_tenant") { configuration.limits.sessionsPerTenant = value }
            if let value = try limits.byteSize("max_archive_size") { configuration.limits.maxArchiveBytes = value }
        }
        if let workers = try top.table("workers") {
            try workers.allowOnly([
                "listen", "advertise", "tls_cert", "tls_key", "client_ca", "heartbeat", "grace", "sample",
                "local_group", "pools",
            ])
            if let listen = try workers.string("listen") {
                configuration.workers.listen = listen.isEmpty ? nil : listen
            }
            if let advertise = try workers.string("advertise") {
                configuration.workers.advertise = advertise.isEmpty ? nil : advertise
            }
            configuration.workers.tlsCert = try workers.string("tls_cert")
            configuration.workers.tlsKey = try workers.string("tls_key")
            configuration.workers.clientCA = try workers.string("client_ca")
            if let value = try workers.duration("heartbeat") { configuration.workers.heartbeat = value }
            if let value = try workers.duration("grace") { configuration.workers.grace = value }
            if let value = try workers.integer("sample") {
                guard value >= 1 else {
                    throw CorralError.invalidArgument("\(source): [workers] sample must be 1 or more")
                }
                configuration.workers.sample = value
            }
            if let value = try workers.string("local_group") {
                if !value.isEmpty {
                    try workers.check("local_group") { try WorkerGroup.validate(value) }
                }
                configuration.workers.localGroup = value
            }
            configuration.workers.pools = try parseGroupPools(workers)
        }
        if let engine = try top.table("engine") {
            try engine.allowOnly(["endpoint", "tls_ca", "tls_cert", "tls_key"])
            configuration.engine.endpoint = try engine.string("endpoint")
            configuration.engine.tlsCA = try engine.string("tls_ca")
            configuration.engine.tlsCert = try engine.string("tls_cert")
            configuration.engine.tlsKey = try engine.string("tls_key")
        }
        if let service = try top.table("service") {
            try service.allowOnly(["check_interval", "reap_interval", "claim_grace", "backoff_initial", "backoff_max"])
            if let value = try service.duration("check_interval") { configuration.service.checkInterval = value }
            if let value = try service.duration("reap_interval") { configuration.service.reapInterval = value }
            if let value = try service.duration("claim_grace") { configuration.service.claimGrace = value }
            if let value = try service.duration("backoff_initial") { configuration.service.backoff.initial = value }
            if let value = try service.duration("backoff_max") { configuration.service.backoff.maximum = value }
        }
        var names: Set<TemplateName> = []
        for (index, table) in try top.tables("templates").enumerated() {
            let template = try parseTemplate(table, index: index)
            guard names.insert(template.name).inserted else {
                throw CorralError.invalidArgument("\(source): template '\(template.name)' is defined twice")
            }
            configuration.templates.append(template)
        }
        return configuration
    }

    /// `[[workers.pools]]`: `group` (default `default`), `template`, `min_idle`; one entry per
    /// group and template.
    static func parseGroupPools(_ workers: TableReader) throws -> [GroupPoolTarget] {
        var targets: [GroupPoolTarget] = []
        for (index, entry) in try workers.tables("pools").enumerated() {
            try entry.allowOnly(["group", "template", "min_idle"])
            let group = try entry.string("group") ?? WorkerGroup.defaultName
            try entry.check("group") { try WorkerGroup.validate(group) }
            guard let template = try entry.string("template") else {
                throw CorralError.invalidArgument(
                    "\(entry.source): workers.pools entry \(index + 1) has no template",
                    hint: #"add template = "base" (a template the group's workers define)"#)
            }
            _ = try entry.check("template") { try TemplateName(validating: template) }
            guard let minIdle = try entry.integer("min_idle"), minIdle >= 0 else {
                throw CorralError.invalidArgument(
                    "\(entry.source): workers.pools entry \(index + 1) needs min_idle, 0 or more")
            }
            guard !targets.contains(where: { $0.group == group && $0.template == template }) else {
                throw CorralError.invalidArgument(
                    "\(entry.source): workers.pools names group '\(group)' and template '\(template)' twice")
            }
            targets.append(GroupPoolTarget(group: group, template: template, minIdle: minIdle))
        }
        return targets
    }

    /// `[gateway]`: `private_hosts`, and `[gateway.push_branches]` with one key per tenant.
    static func parseGateway(_ table: TableReader) throws -> GatewaySettings {
        try table.allowOnly(["private_hosts", "push_branches"])
        var settings = GatewaySettings()
        if let hosts = try table.strings("private_hosts") {
            settings.dialPolicy = try table.check("private_hosts") { try DialPolicy(privateHosts: hosts) }
        }
        if let branches = try table.table("push_branches") {
            var rules: [TenantID: [String]] = [:]
            for key in branches.keys.sorted() {
                let tenant = try branches.check(key) { try TenantID(validating: key) }
                let names = try branches.strings(key) ?? []
                rules[tenant] = names
                _ = try branches.check(key) { try PushBranchRules([tenant: names]) }
            }
            settings.pushBranches = try PushBranchRules(rules)
        }
        return settings
    }

    static func parseTemplate(_ table: TableReader, index: Int) throws -> SandboxTemplate {
        guard let rawName = try table.string("name") else {
            throw CorralError.invalidArgument(
                "\(table.source): templates entry \(index + 1) has no name",
                hint: #"add name = "base" (a-z, 0-9, '-', '_')"#)
        }
        let name: TemplateName
        do {
            name = try TemplateName(validating: rawName)
        } catch let error as CorralError {
            throw CorralError(.invalidArgument, "\(table.source): \(error.message)", hint: error.hint)
        }
        let table = table.named("template '\(name)'")
        try table.allowOnly([
            "name", "image", "runtime", "memory", "cpus", "pids", "tmp_size", "max_file_size", "open_files", "disk",
            "env",
            "setup",
            "setup_timeout", "ttl", "idle_ttl", "pool", "egress", "workspace",
        ])
        var template = SandboxTemplate(name: name, image: try table.string("image") ?? ProvisionRequest.defaultImage)
        if let runtime = try table.string("runtime") {
            template.runtime = try table.wrap { try SandboxRuntime(parsing: runtime) }
        }
        if let memory = try table.byteSize("memory") { template.resources.memory = memory }
        if let cpus = try table.number("cpus") { template.resources.cpus = cpus }
        if let pids = try table.integer("pids") { template.resources.pids = pids }
        if let size = try table.byteSize("tmp_size") { template.resources.tmpSize = size }
        if let size = try table.byteSize("max_file_size") { template.resources.maxFileSize = size }
        if let files = try table.integer("open_files") { template.resources.openFiles = files }
        if let disk = try table.byteSize("disk") { template.resources.disk = disk }
        if let env = try table.table("env") {
            for key in env.keys {
                guard let value = try env.string(key) else { continue }
                template.env[key] = value
            }
        }
        template.setup = try table.strings("setup") ?? []
        if let value = try table.duration("setup_timeout") { template.setupTimeout = value }
        template.ttl = try table.duration("ttl")
        template.idleTTL = try table.duration("idle_ttl")
        template.egress = try table.strings("egress") ?? []
        if let workspace = try table.table("workspace") {
            try workspace.allowOnly(["repository", "ref", "write"])
            guard let repository = try workspace.string("repository") else {
                throw CorralError.invalidArgument(
                    "\(table.source): template '\(name)': workspace has no repository",
                    hint: #"add repository = "github.com/OWNER/REPO""#)
            }
            let ref = try workspace.string("ref")
            let write = try workspace.bool("write") ?? false
            template.workspace = try table.wrap { try SandboxWorkspace(repository: repository, ref: ref, write: write) }
        }
        if let pool = try table.table("pool") {
            try pool.allowOnly(["min_idle", "max_total", "max_age", "refill_concurrency"])
            if let value = try pool.integer("min_idle") { template.pool.minIdle = value }
            if let value = try pool.integer("max_total") {
                template.pool.maxTotal = value
            } else {
                template.pool.maxTotal = max(template.pool.maxTotal, template.pool.minIdle)
            }
            template.pool.maxAge = try pool.duration("max_age")
            if let value = try pool.integer("refill_concurrency") { template.pool.refillConcurrency = value }
        }
        return try table.wrap { try template.validated() }
    }
}

/// Reads typed values out of a TOML table, with errors that say where the value was.
struct TableReader {
    let table: TOMLTable
    /// Dotted path of this table ("engine", "templates.pool"), for messages.
    let path: String
    let source: String
    /// What the messages call this table's owner ("template 'base'"), when it is in one.
    var owner: String?

    init(_ table: TOMLTable, path: String, source: String, owner: String? = nil) {
        self.table = table
        self.path = path
        self.source = source
        self.owner = owner
    }

    var keys: [String] { table.keys }

    func named(_ owner: String) -> TableReader {
        TableReader(table, path: path, source: source, owner: owner)
    }

    private func key(_ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }

    private func location(_ name: String) -> String {
        "\(source): \(owner.map { "\($0): " } ?? "")\(key(name))"
    }

    /// Errors thrown by `body` are prefixed with the file (the template is already in them).
    func wrap<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as CorralError {
            let message =
                error.message.hasPrefix("template '") || owner == nil
                ? error.message : "\(owner ?? ""): \(error.message)"
            throw CorralError(error.code, "\(source): \(message)", hint: error.hint)
        }
    }

    /// Runs `body`, which checks the value at `name`; its error becomes one line naming the
    /// file and the key.
    func check<T>(_ name: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as CorralError {
            throw CorralError(error.code, "\(location(name)): \(error.message)", hint: error.hint)
        }
    }

    func allowOnly(_ allowed: Set<String>) throws {
        let unknown = keys.filter { !allowed.contains($0) }.sorted()
        guard unknown.isEmpty else {
            throw CorralError.invalidArgument(
                "\(location(unknown[0])) is not a setting corral knows",
                hint: "known here: \(allowed.sorted().joined(separator: ", ")); see docs/configuration.md")
        }
    }

    private func mismatch(_ name: String, expected: String, got value: any TOMLValueConvertible) -> CorralError {
        CorralError.invalidArgument("\(location(name)) must be \(expected), not \(value.type)")
    }

    func string(_ name: String) throws -> String? {
        guard let value = table[name] else { return nil }
        guard let string = value.string else { throw mismatch(name, expected: "a string", got: value) }
        return string
    }

    func integer(_ name: String) throws -> Int? {
        guard let value = table[name] else { return nil }
        guard let integer = value.int else { throw mismatch(name, expected: "a whole number", got: value) }
        return integer
    }

    func bool(_ name: String) throws -> Bool? {
        guard let value = table[name] else { return nil }
        guard let bool = value.bool else { throw mismatch(name, expected: "true or false", got: value) }
        return bool
    }

    func number(_ name: String) throws -> Double? {
        guard let value = table[name] else { return nil }
        if let integer = value.int { return Double(integer) }
        guard let double = value.double else { throw mismatch(name, expected: "a number", got: value) }
        return double
    }

    func duration(_ name: String) throws -> Duration? {
        guard let text = try string(name) else { return nil }
        do {
            let value = try Duration(parsing: text)
            guard value > .zero else { throw CorralError.invalidArgument("it must be longer than 0") }
            return value
        } catch let error as CorralError {
            throw CorralError.invalidArgument(
                "\(location(name)): \(error.message)", hint: #"use a duration such as "90s", "30m" or "1h""#)
        }
    }

    func byteSize(_ name: String) throws -> ByteSize? {
        guard let text = try string(name) else { return nil }
        do {
            return try ByteSize(parsing: text)
        } catch let error as CorralError {
            throw CorralError.invalidArgument(
                "\(location(name)): \(error.message)", hint: #"use a size such as "512m" or "2g""#)
        }
    }

    func strings(_ name: String) throws -> [String]? {
        guard let value = table[name] else { return nil }
        guard let array = value.array else { throw mismatch(name, expected: "an array of strings", got: value) }
        return try array.map { element in
            guard let string = element.string else {
                throw mismatch(name, expected: "an array of strings", got: element)
            }
            return string
        }
    }

    func table(_ name: String) throws -> TableReader? {
        guard let value = table[name] else { return nil }
        guard let nested = value.table else { throw mismatch(name, expected: "a table", got: value) }
        return TableReader(nested, path: key(name), source: source, owner: owner)
    }

    /// An array of tables (`[[name]]`).
    func tables(_ name: String) throws -> [TableReader] {
        guard let value = table[name] else { return [] }
        guard let array = value.array else {
            throw mismatch(name, expected: "an array of tables ([[\(name)]])", got: value)
        }
        return try array.map { element in
            guard let nested = element.table else { throw mismatch(name, expected: "an array of tables", got: element) }
            return TableReader(nested, path: key(name), source: source, owner: owner)
        }
    }
}
