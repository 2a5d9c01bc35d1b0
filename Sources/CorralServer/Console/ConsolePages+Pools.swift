import CorralAPI
import CorralCore
import CorralFleet
import CorralHost
import CorralSandbox
import Foundation
import Hummingbird

extension CorralServer {
    func addConsolePoolRoutes(to routes: RouterGroup<CorralRequestContext>, auth: AuthMode) {
        routes.get("pools") { request, context -> Response in
            let access = try await consoleAccess(request, context, auth: auth)
            let region = await poolsRegion(access.viewer)
            if Self.fragment(request) == "pools-live" { return ConsoleHTTP.page(region) }
            let body: HTML = """
                <h1>Pools and workers</h1>
                <div id="pools-live" data-refresh="5000">\(region)</div>
                """
            return ConsoleHTTP.page(
                ConsoleLayout(title: "Pools and workers", section: .pools, access: access, body: body).render())
        }
    }

    /// The pools as they are and over the last hour, then the engine hosts. A tenant sees what
    /// `/v1/pools` shows it: how many members wait and are being made, and how many of the
    /// pool's sandboxes it holds itself; the operator also sees every claim, the claim
    /// latencies, the fill rate, errors and the workers.
    func poolsRegion(_ viewer: ConsoleViewer) async -> HTML {
        var statuses: [PoolStatus] = []
        for pool in runner.pools { statuses.append(await pool.currentStatus()) }
        let history = console.history.snapshot
        var mine: [SandboxInfo] = []
        if let tenant = viewer.onlyTenant { mine = (try? await provisioner.list(tenant: tenant)) ?? [] }
        var cards: [HTML] = []
        var rows: [HTML] = []
        for status in statuses {
            let claimed = viewer.isOperator ? status.claimed : mine.filter { $0.template == status.template }.count
            let error: HTML =
                viewer.isOperator
                ? status.lastError.map { "<span class=\"sub\">\(Self.redacted($0, configuration))</span>" } ?? "" : ""
            rows.append(
                """
                <tr><td>\(status.template)</td><td>local</td>\
                <td><span class="badge s-\(status.state.rawValue)">\(status.state.rawValue)</span>\(error)</td>\
                <td class="num">\(status.idle)</td><td class="num">\(status.preparing)</td><td class="num">\(claimed)</td>\
                <td class="num">\(status.minIdle)</td><td class="num">\(status.maxTotal)</td></tr>
                """)
            let samples = history.pools[status.template] ?? []
            var series = [
                ConsoleCharts.Series(name: "idle", points: samples.map { ($0.time, Double($0.idle)) }),
                ConsoleCharts.Series(name: "preparing", points: samples.map { ($0.time, Double($0.preparing)) }),
            ]
            if viewer.isOperator {
                series.append(
                    ConsoleCharts.Series(name: "claimed", points: samples.map { ($0.time, Double($0.claimed)) }))
            }
            cards.append(
                ConsoleCharts.lines(
                    title: "Pool \(status.template.rawValue) on local", unit: "", series: series,
                    id: "chart-pool-\(status.template.rawValue)"))
        }
        // Workers that dialled in, for the operator: their pools (ready and target, from their
        // last heartbeat) in the same table.
        let fleet = viewer.isOperator ? (self.fleet?.summaries() ?? []) : []
        for worker in fleet {
            for pool in worker.pools {
                rows.append(
                    """
                    <tr><td>\(pool.template)</td><td>\(worker.name)</td>\
                    <td><span class="badge s-\(worker.state)">\(worker.state)</span></td>\
                    <td class="num">\(pool.ready)</td><td class="num">–</td><td class="num">–</td>\
                    <td class="num">\(pool.target)</td><td class="num">–</td></tr>
                    """)
            }
        }
        let claimedHead = viewer.isOperator ? "Claimed" : "Claimed by you"
        let table: HTML =
            rows.isEmpty
            ? "<p class=\"notice\">No pools: no template in corral.toml keeps warm members (<code>[templates.pool] min_idle</code>).</p>"
            : """
            <table><caption class="muted">Per template and worker</caption><thead><tr><th scope="col">Template</th>\
            <th scope="col">Worker</th><th scope="col">State</th><th scope="col" class="num">Idle</th>\
            <th scope="col" class="num">Preparing</th><th scope="col" class="num">\(claimedHead)</th>\
            <th scope="col" class="num">Min idle</th><th scope="col" class="num">Max total</th></tr></thead>
            <tbody>\(rows)</tbody></table>
            """
        var operatorCharts: HTML = ""
        var workers: HTML = ""
        if viewer.isOperator {
            let provisions = history.provisions
            operatorCharts =
                ConsoleCharts.lines(
                    title: "Claim latency (warm, every template)", unit: "ms",
                    series: [
                        .init(name: "p50", points: provisions.map { ($0.time, $0.warmP50) }),
                        .init(name: "p95", points: provisions.map { ($0.time, $0.warmP95) }),
                        .init(name: "cold p50", points: provisions.map { ($0.time, $0.coldP50) }),
                    ], id: "chart-claims")
                + ConsoleCharts.lines(
                    title: "Fill rate (members made per minute, every template)", unit: "/min",
                    series: [.init(name: "made", points: provisions.map { ($0.time, $0.fillPerMinute) })],
                    id: "chart-fill")
            workers = workerTable(history.engine, fleet: fleet)
        }
        return """
            \(table)
            <h2>Over the last hour</h2>
            <div class="charts">\(cards)\(operatorCharts)</div>
            \(workers)
            """
    }

    func workerTable(_ host: ConsoleHistory.EngineHost, fleet: [WorkerSummary]) -> HTML {
        let now = Date()
        let health: HTML =
            host.checked == nil
            ? "<span class=\"badge s-starting\">not checked yet</span>"
            : host.healthy
                ? "<span class=\"badge s-healthy\">healthy</span>"
                : "<span class=\"badge s-unhealthy\">unhealthy</span><span class=\"sub\">\(Self.redacted(host.lastError ?? "", configuration))</span>"
        var capacity: [String] = []
        if let cpus = host.cpus { capacity.append("\(cpus) cpus") }
        if let memory = host.memory { capacity.append("\(Display.bytes(memory)) memory") }
        if let containers = host.containers { capacity.append("\(containers) containers") }
        let engine = [host.version.map { "engine \($0)" }, host.apiVersion.map { "API \($0)" }].compactMap { $0 }
        var rows: [HTML] = [
            """
            <tr><td>local<span class="sub">this service's own engine</span></td><td>\(health)</td>\
            <td>corral \(CorralVersion.current)<span class="sub">\(engine.joined(separator: ", "))</span></td>\
            <td>\(capacity.isEmpty ? "–" : capacity.joined(separator: " · "))</td>\
            <td>\(host.runtimes.isEmpty ? "–" : host.runtimes.joined(separator: ", "))</td>\
            <td>\(host.lastHeartbeat.map { Display.age(since: $0, now: now) + " ago" } ?? "never")</td></tr>
            """
        ]
        for worker in fleet {
            var room: [String] = []
            if let capacity = worker.capacity {
                room = [
                    "\(worker.sandboxes) / \(capacity.maxSandboxes) sandboxes", "\(capacity.cpus) cpus",
                    "\(Display.bytes(capacity.memoryBytes)) memory",
                ]
            }
            rows.append(
                """
                <tr><td>\(worker.name)<span class="sub">group \(worker.group)</span></td>\
                <td><span class="badge s-\(worker.state)">\(worker.state)</span></td>\
                <td>corral \(worker.version)<span class="sub">worker protocol \(String(worker.protocol))</span></td>\
                <td>\(room.isEmpty ? "–" : room.joined(separator: " · "))</td>\
                <td>\(worker.templates.isEmpty ? "–" : "templates " + worker.templates.joined(separator: ", "))</td>\
                <td>\(worker.lastHeartbeat.map { Display.age(since: $0, now: now) + " ago" } ?? "never")</td></tr>
                """)
        }
        let note: HTML =
            self.fleet == nil
            ? "<p class=\"muted\">Workers on other hosts dial in once <code>[workers] listen</code> is set (docs/workers.md).</p>"
            : ""
        return """
            <h2>Workers</h2>
            \(note)
            <table><thead><tr><th scope="col">Worker</th><th scope="col">Health</th><th scope="col">Version</th>\
            <th scope="col">Capacity</th><th scope="col">Runtimes</th><th scope="col">Last heartbeat</th></tr></thead>
            <tbody>\(rows)</tbody></table>
            """
    }
}
