import ArgumentParser
import CorralCore
import CorralSandbox
import CorralService
import Foundation

struct PoolList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls", abstract: "List pools and their members by state (preparing, idle, claiming, claimed, dead)."
    )

    @OptionGroup var global: GlobalOptions

    @Option(
        help: ArgumentHelp(
            "corral.toml (default: CORRAL_CONFIG, else $STATE/corral.toml when present).", valueName: "FILE"))
    var config: String?

    @Flag(help: "Print JSON: one object per pool, with its status and members.")
    var json = false

    /// One pool as `pool ls --json` prints it.
    struct Pool: Encodable {
        var template: String
        /// ready, degraded, starting, stopped (no service runs it), or unknown (no service ever
        /// published a status here).
        var state: String
        var lastError: String?
        var minIdle: Int?
        var maxTotal: Int?
        var counts: [String: Int]
        var members: [PoolMemberInfo]
    }

    func run() async throws {
        let context = CommandContext(global)
        let configuration = try context.configuration(explicit: config)
        let provisioner = try context.provisioner(configuration: configuration)
        let members = try await provisioner.poolMembers()
        let statusDirectory = CorralServiceRunner.statusDirectory(sandboxes: try provisioner.records().directory)
        let statuses = Dictionary(
            PoolStatus.published(in: statusDirectory).map { ($0.template, $0) }, uniquingKeysWith: { first, _ in first }
        )
        var names = Set(members.map(\.template)).union(statuses.keys)
        for template in configuration?.templates ?? [] where template.pool.minIdle > 0 { names.insert(template.name) }
        let pools = names.sorted().map { name -> Pool in
            let own = members.filter { $0.template == name }
            var counts: [String: Int] = [:]
            for state in PoolMemberInfo.State.allCases {
                counts[state.rawValue] = own.filter { $0.state == state }.count
            }
            let status = statuses[name]
            var state = status?.state.rawValue ?? "unknown"
            // A status published by a process that is gone (kill -9) says nothing about now.
            if let status, status.state != .stopped, status.ownerAlive == false { state = "stopped" }
            let template = configuration?.template(named: name)
            return Pool(
                template: name.rawValue, state: state, lastError: state == "degraded" ? status?.lastError : nil,
                minIdle: template?.pool.minIdle ?? status?.minIdle,
                maxTotal: template?.pool.maxTotal ?? status?.maxTotal,
                counts: counts, members: own)
        }
        if json {
            try CLIOutput.printJSON(pools)
            return
        }
        var rows = [["TEMPLATE", "STATE", "IDLE", "PREPARING", "CLAIMING", "CLAIMED", "DEAD", "MIN_IDLE", "MAX_TOTAL"]]
        for pool in pools {
            rows.append(
                [pool.template, pool.state]
                    + ["idle", "preparing", "claiming", "claimed", "dead"].map { String(pool.counts[$0] ?? 0) }
                    + [pool.minIdle.map(String.init) ?? "-", pool.maxTotal.map(String.init) ?? "-"])
        }
        CLIOutput.printTable(rows)
        for pool in pools {
            if let error = pool.lastError { print("\(pool.template): degraded: \(error)") }
        }
    }
}
