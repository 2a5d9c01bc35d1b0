import CorralCore
import CorralFleet
import CorralHost
import CorralSandbox
import CorralSession
import DockerEngine
import Foundation
import Hummingbird

extension CorralServer {
    func addConsoleSandboxRoutes(to routes: RouterGroup<CorralRequestContext>, auth: AuthMode) {
        routes.get("sandboxes") { request, context -> Response in
            let access = try await consoleAccess(request, context, auth: auth)
            let region = await sandboxTable(access.viewer, page: Self.pageNumber(request))
            if Self.fragment(request) == "sandboxes-live" { return ConsoleHTTP.page(region) }
            let body: HTML = """
                <h1>Sandboxes</h1>
                <div id="sandboxes-live" data-refresh="5000" aria-live="polite">\(region)</div>
                """
            return ConsoleHTTP.page(
                ConsoleLayout(title: "Sandboxes", section: .sandboxes, access: access, body: body).render())
        }

        routes.get("sandboxes/:id") { request, context -> Response in
            let access = try await consoleAccess(request, context, auth: auth)
            let (id, owner, place) = try consoleSandbox(try context.parameters.require("id"), viewer: access.viewer)
            let region = try await sandboxDetails(id, owner: owner, place: place, viewer: access.viewer)
            if Self.fragment(request) == "sandbox-live" { return ConsoleHTTP.page(region) }
            let body: HTML = """
                <h1>Sandbox <span class="mono">\(id)</span></h1>
                <div id="sandbox-live" data-refresh="4000">\(region)</div>
                """
            return ConsoleHTTP.page(
                ConsoleLayout(title: "Sandbox \(id)", section: .sandboxes, access: access, body: body).render())
        }
    }

    static func pageNumber(_ request: Request) -> Int {
        max(1, request.uri.queryParameters["page"].flatMap { Int($0) } ?? 1)
    }

    /// Where a sandbox shown in the console runs: this service's engine, or a worker's, whose
    /// link the page's facts come through.
    enum ConsoleSandboxPlace {
        case local
        case worker(name: String, link: WorkerLinkClient)
    }

    /// The sandbox a console URL names, its tenant and where it runs, if `viewer` may see it;
    /// otherwise the same not-found whether it is missing or another tenant's. Ownership comes
    /// from the sandbox's record, or for a sandbox on a worker from its placement, as for the
    /// API.
    func consoleSandbox(_ text: String, viewer: ConsoleViewer) throws -> (SandboxID, TenantID, ConsoleSandboxPlace) {
        let notFound = CorralError.notFound("no sandbox \(text.prefix(64))")
        guard let id = SandboxID(text) else { throw notFound }
        if let record = try? provisioner.records().read(id) {
            guard viewer.sees(record.tenant) else { throw notFound }
            return (id, record.tenant, .local)
        }
        guard let fleet, case .worker(let name, let link) = fleet.route(id), let tenant = fleet.tenant(of: id),
            viewer.sees(tenant)
        else { throw notFound }
        return (id, tenant, .worker(name: name, link: link))
    }

    /// What a sandbox of `template` may use, in words.
    func resources(of template: TemplateName?) -> String {
        guard let template, let settings = provisioner.configuration.template(named: template) else {
            return "as requested"
        }
        let resources = settings.resources
        return "\(Display.bytes(resources.memory.bytes)) · \(ConsoleCharts.number(resources.cpus)) cpu · "
            + "\(resources.disk.bytes == 0 ? "no disk limit" : Display.bytes(resources.disk.bytes) + " disk")"
    }

    func sandboxTable(_ viewer: ConsoleViewer, page: Int) async -> HTML {
        let sandboxes: [SandboxInfo]
        do {
            sandboxes = try await (provisioner.list(tenant: viewer.onlyTenant) + workerSandboxes(viewer)).sorted {
                ($0.created ?? .distantPast) > ($1.created ?? .distantPast)
            }
        } catch {
            return
                "<p class=\"notice error\">The engine did not answer: \(Self.redacted("\(error)", configuration)).</p>"
        }
        guard !sandboxes.isEmpty else { return "<p class=\"notice\">No sandboxes.</p>" }
        let size = configuration.console.listPageSize
        let pages = max(1, (sandboxes.count + size - 1) / size)
        let shown = sandboxes.dropFirst((min(page, pages) - 1) * size).prefix(size)
        let now = Date()
        let rows: [HTML] = shown.map { info in
            let tenant: HTML = viewer.isOperator ? "<td>\(info.tenant)</td>" : ""
            let path = info.path?.rawValue ?? "–"
            let session: HTML =
                info.session.map { "<a class=\"mono\" href=\"/console/sessions/\($0)\">\($0)</a>" } ?? "–"
            // A sandbox on a worker: its template's resources are the worker's, not this host's.
            let id: HTML = "<a class=\"mono\" href=\"/console/sandboxes/\(info.id)\">\(info.id)</a>"
            return """
                <tr><td>\(id)</td>\(tenant)\
                <td>\(info.template?.rawValue ?? "–")</td><td>\(info.worker ?? "local")</td>\
                <td>\(info.created.map { Display.age(since: $0, now: now) } ?? "–")</td>\
                <td><span class="badge s-\(info.state)">\(info.state)</span></td>\
                <td><span class="badge s-\(path)">\(path)</span></td>\
                <td>\(info.worker == nil ? resources(of: info.template) : "–")</td><td>\(info.runtime)</td><td>\(session)</td></tr>
                """
        }
        let tenantHead: HTML = viewer.isOperator ? "<th scope=\"col\">Tenant</th>" : ""
        return """
            <p class="muted">\(Display.grouped(sandboxes.count)) sandboxes.</p>
            <table><caption class="muted">Newest first</caption><thead><tr><th scope="col">Sandbox</th>\(tenantHead)\
            <th scope="col">Template</th><th scope="col">Worker</th><th scope="col">Age</th><th scope="col">State</th>\
            <th scope="col">Warm or cold</th><th scope="col">Resources</th><th scope="col">Runtime</th>\
            <th scope="col">Session</th></tr></thead>
            <tbody>\(rows)</tbody></table>
            \(pager(page: min(page, pages), pages: pages, path: "/console/sandboxes", query: []))
            """
    }

    /// The sandboxes on connected workers that `viewer` may see, from the workers' own listings
    /// (a listing is a tenant's: one per tenant the worker holds sandboxes of); a worker that
    /// does not answer is left out.
    func workerSandboxes(_ viewer: ConsoleViewer) async -> [SandboxInfo] {
        guard let fleet else { return [] }
        var rows: [SandboxInfo] = []
        for (name, link) in fleet.links(in: nil) {
            let tenants = viewer.onlyTenant.map { [$0] } ?? fleet.tenants(on: name).sorted { $0.rawValue < $1.rawValue }
            for tenant in tenants {
                guard let listed = try? await link.get("/v1/sandboxes", as: [SandboxInfo].self, tenant: tenant)
                else { continue }
                for var row in listed where viewer.sees(row.tenant) && !fleet.isAbandoned(row.id) {
                    row.worker = name
                    rows.append(row)
                }
            }
        }
        return rows
    }

    func sandboxDetails(_ id: SandboxID, owner: TenantID, place: ConsoleSandboxPlace, viewer: ConsoleViewer)
        async throws -> HTML
    {
        let info: SandboxInfo
        do {
            switch place {
            case .local:
                info = try await provisioner.handle(id, tenant: owner).info()
            case .worker(_, let link):
                // The worker's own answer, as the API forwards it, from the worker's engine.
                info = try await link.get("/v1/sandboxes/\(id)", as: SandboxInfo.self, tenant: owner)
            }
        } catch let error as CorralError where error.code == .notFound {
            throw CorralError.notFound("no sandbox \(id)")
        }
        let now = Date()
        var facts: [HTML] = []
        if viewer.isOperator { facts.append("<dt>Tenant</dt><dd>\(info.tenant)</dd>") }
        facts.append(
            "<dt>State</dt><dd><span class=\"badge s-\(info.state)\">\(info.state)</span>\(Self.exit(info.exit))</dd>")
        facts.append("<dt>Template</dt><dd>\(info.template?.rawValue ?? "none")</dd>")
        switch place {
        case .local: facts.append("<dt>Worker</dt><dd>local (this service's engine)</dd>")
        case .worker(let name, _):
            let group = fleet?.group(ofWorker: name).map { " (group \($0))" } ?? ""
            facts.append("<dt>Worker</dt><dd><a href=\"/console/pools\">\(name)</a>\(group)</dd>")
        }
        facts.append("<dt>Image</dt><dd class=\"mono\">\(info.image)</dd><dt>Runtime</dt><dd>\(info.runtime)</dd>")
        var limits: [String] = []
        if let memory = info.limits?.memoryBytes { limits.append("\(Display.bytes(memory)) memory") }
        if let cpus = info.limits?.cpus { limits.append("\(ConsoleCharts.number(cpus)) cpu") }
        if let pids = info.limits?.pids { limits.append("\(pids) processes") }
        if !limits.isEmpty {
            facts.append("<dt>Resources</dt><dd>\(limits.joined(separator: " · "))</dd>")
        } else if case .local = place {
            facts.append("<dt>Resources</dt><dd>\(resources(of: info.template))</dd>")
        }
        if let created = info.created {
            facts.append(
                "<dt>Created</dt><dd>\(Display.dateTime(created)) UTC (\(Display.age(since: created, now: now)) ago)</dd>"
            )
        }
        if let path = info.path {
            facts.append(
                "<dt>Provisioned</dt><dd><span class=\"badge s-\(path.rawValue)\">\(path.rawValue)</span></dd>")
        }
        if let expires = info.expires { facts.append("<dt>Expires</dt><dd>\(Display.dateTime(expires)) UTC</dd>") }
        if let last = info.lastActivity {
            facts.append("<dt>Last command</dt><dd>\(Display.age(since: last, now: now)) ago</dd>")
        }
        if let workspace = info.workspace {
            facts.append("<dt>Workspace</dt><dd>\(JSONCodec.string(Self.json(workspace)))</dd>")
        }
        if let hosts = info.egressHosts, !hosts.isEmpty {
            facts.append("<dt>May reach</dt><dd>\(hosts.joined(separator: ", "))</dd>")
        }
        if !info.labels.isEmpty {
            let labels = info.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            facts.append("<dt>Labels</dt><dd>\(labels.joined(separator: ", "))</dd>")
        }
        // Commands come from the agent sessions that used the sandbox.
        var sessionIDs = await console.summaries.sessions(using: id)
        if let session = info.session, !sessionIDs.contains(session) { sessionIDs.insert(session, at: 0) }
        var commands: [(SessionID, SessionSummary.Command)] = []
        var provisioning: HTML = ""
        if let store = sessions {
            for session in sessionIDs {
                guard let sessionInfo = try? await store.session(session), viewer.sees(sessionInfo.tenant),
                    let summary = try? await console.summaries.summary(
                        of: session, head: sessionInfo.head, store: store)
                else { continue }
                facts.append(
                    "<dt>Session</dt><dd><a class=\"mono\" href=\"/console/sessions/\(session)\">\(session)</a></dd>")
                if let provision = summary.provisions[id] {
                    provisioning =
                        "<p>Provisioned \(provision.path) for sandbox name <b>\(provision.name)</b> in \(Display.duration(milliseconds: provision.milliseconds)) (event \(provision.seq)).</p>"
                }
                commands += (summary.commands[id] ?? []).map { (session, $0) }
            }
        }
        commands.sort { $0.1.started > $1.1.started }
        let list = try await commandList(Array(commands.prefix(20)), now: now)
        return """
            <dl class="facts">\(facts)</dl>
            \(provisioning)
            <h2>Recent commands</h2>
            <p class="muted">Newest first: the tool calls agent sessions made here, ended or running. Commands run \
            straight through the API (<code>corral exec</code>) are not recorded yet.</p>
            \(list)
            """
    }

    static func exit(_ exit: SandboxExit?) -> HTML {
        guard let exit else { return "" }
        return " exit \(exit.code)\(exit.oomKilled ? HTML(" (out of memory)") : "")"
    }

    func commandList(_ commands: [(SessionID, SessionSummary.Command)], now: Date) async throws -> HTML {
        guard !commands.isEmpty else { return "<p class=\"notice\">No commands recorded.</p>" }
        var items: [HTML] = []
        for (session, command) in commands {
            var output: HTML = ""
            if let seq = command.resultSeq, let store = sessions,
                let event = try? await store.readPage(session, from: seq, limit: 1).events.first
            {
                output =
                    "<pre class=\"output\">\(Display.text(event.data["text"]?.stringValue ?? "", limit: 4000))</pre>"
            }
            let status = command.status ?? "running"
            var parts: [String] = [command.tool]
            if let exit = command.exitCode { parts.append("exit \(exit)") }
            if let ms = command.milliseconds {
                parts.append(Display.duration(milliseconds: ms))
            } else if command.status == nil {
                parts.append("for \(Display.age(since: command.started, now: now))")
            }
            let anchor = "cmd-\(session.rawValue)-\(command.intentSeq)"
            let link = "/console/sessions/\(session.rawValue)?from=\(command.intentSeq)#ev-\(command.intentSeq)"
            items.append(
                """
                <li><details id="\(anchor)"><summary><span class="badge s-\(status)">\(status)</span> \
                <time datetime="\(Timestamp.rfc3339(command.started))">\(Display.clock(command.started))</time> \
                <span>\(parts.joined(separator: " · "))</span> <code>\(Display.line(command.preview, limit: 140))</code>\
                </summary><div class="detail"><pre>\(Display.text(command.preview, limit: 2000))</pre>\(output)\
                <p><a href="\(link)">In the session's timeline</a></p></div></details></li>
                """)
        }
        return "<ol class=\"timeline\">\(items)</ol>"
    }

    static func redacted(_ text: String, _ configuration: Configuration) -> String {
        guard let state = configuration.stateDirectory, !state.isEmpty else { return text }
        return text.replacingOccurrences(of: state, with: "$STATE")
    }
}
