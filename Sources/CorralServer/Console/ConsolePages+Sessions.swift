import AsyncAlgorithms
import CorralCore
import CorralHarness
import CorralHost
import CorralSession
import Foundation
import Hummingbird
import NIOCore
import ServiceLifecycle

extension CorralServer {
    func addConsoleSessionRoutes(to routes: RouterGroup<CorralRequestContext>, auth: AuthMode) {
        routes.get("sessions") { request, context -> Response in
            let access = try await consoleAccess(request, context, auth: auth)
            let filter = ConsoleSessionFilter(request)
            let rows = try await consoleSessionRows(access.viewer).filter(filter.matches)
            let region = sessionTable(rows, filter: filter, viewer: access.viewer)
            if Self.fragment(request) == "sessions-live" { return ConsoleHTTP.page(region) }
            let body: HTML = """
                <h1>Sessions</h1>
                \(sessionFilters(filter, viewer: access.viewer))
                <div id="sessions-live" data-refresh="5000" aria-live="polite">\(region)</div>
                """
            return ConsoleHTTP.page(
                ConsoleLayout(title: "Sessions", section: .sessions, access: access, body: body).render())
        }

        routes.get("sessions/:id") { request, context -> Response in
            let access = try await consoleAccess(request, context, auth: auth)
            let info = try await consoleSession(try context.parameters.require("id"), viewer: access.viewer)
            return ConsoleHTTP.page(try await sessionPage(info, request: request, access: access))
        }

        routes.get("sessions/:id/events/:seq") { request, context -> Response in
            let access = try await consoleAccess(request, context, auth: auth)
            let info = try await consoleSession(try context.parameters.require("id"), viewer: access.viewer)
            guard let seq = UInt64(try context.parameters.require("seq")), seq >= 1, seq <= info.head,
                let event = try await sessionStore().readPage(info.id, from: seq, limit: 1).events.first
            else { throw CorralError.notFound("no such event in session \(info.id)") }
            var headers = ConsoleHTTP.headers(contentType: "application/json; charset=utf-8")
            headers[.contentDisposition] = "inline"
            return Response(
                status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: event.jsonLine + "\n"))
            )
        }

        routes.get("sessions/:id/stream") { request, context -> Response in
            let access = try await consoleAccess(request, context, auth: auth)
            let info = try await consoleSession(try context.parameters.require("id"), viewer: access.viewer)
            var from = try queryNumber(request, "from") ?? info.head + 1
            if let last = ConsoleHTTP.header("last-event-id", in: request).flatMap(UInt64.init) {
                from = min(last, UInt64.max - 1) + 1
            }
            return timelineStream(
                info, from: max(from, 1), viewer: access.viewer, request: request, context: context, auth: auth)
        }
    }

    // MARK: The list

    func sessionFilters(_ filter: ConsoleSessionFilter, viewer: ConsoleViewer) -> HTML {
        func options(_ values: [String], _ selected: String?) -> HTML {
            let items: [HTML] =
                [selected == nil ? "<option value=\"\" selected>any</option>" : "<option value=\"\">any</option>"]
                + values.map { value in
                    "<option value=\"\(value)\"\(value == selected ? HTML(" selected") : "")>\(value)</option>"
                }
            return items.joined()
        }
        let tenant: HTML =
            viewer.isOperator
            ? "<label>Tenant <input name=\"tenant\" value=\"\(filter.tenant ?? "")\" size=\"12\"></label>" : ""
        return """
            <form class="filters" method="get" action="/console/sessions" role="search" aria-label="Filter sessions">
            <label>Status <select name="status">\(options(ConsoleSessionFilter.states, filter.status))</select></label>
            <label>Brain <select name="brain">\(options(ConsoleSessionFilter.brains, filter.brain))</select></label>
            \(tenant)
            <label>Id, task or model <input type="search" name="q" value="\(filter.text ?? "")" size="24"></label>
            <button type="submit">Filter</button> <a href="/console/sessions">Clear</a>
            </form>
            """
    }

    func sessionTable(_ rows: [ConsoleSessionRow], filter: ConsoleSessionFilter, viewer: ConsoleViewer) -> HTML {
        let size = configuration.console.listPageSize
        let pages = max(1, (rows.count + size - 1) / size)
        let page = min(filter.page, pages)
        let shown = rows.dropFirst((page - 1) * size).prefix(size)
        guard !rows.isEmpty else { return "<p class=\"notice\">No sessions match.</p>" }
        let now = Date()
        let body: [HTML] = shown.map { row in
            let summary = row.summary
            let task: HTML = summary.task.map { "<span class=\"sub\">\(Display.line($0, limit: 100))</span>" } ?? ""
            let tenant: HTML = viewer.isOperator ? "<td>\(row.info.tenant)</td>" : ""
            let last: HTML =
                summary.lastTime.map {
                    "\(Display.age(since: $0, now: now)) ago<span class=\"sub\">\(summary.lastType ?? "")</span>"
                } ?? "–"
            let sandboxes: [HTML] = summary.sandboxes.values.sorted().map {
                "<a href=\"/console/sandboxes/\($0)\" class=\"mono\">\($0)</a>"
            }
            return """
                <tr><td><a class="mono" href="/console/sessions/\(row.info.id)">\(row.info.id)</a>\(task)</td>\(tenant)\
                <td><span class="badge s-\(row.state)">\(row.state)</span></td>\
                <td>\(summary.brain ?? "–")</td>\
                <td class="num">\(Display.grouped(summary.tokensIn)) / \(Display.grouped(summary.tokensOut))</td>\
                <td><time datetime="\(Timestamp.rfc3339(row.info.created))">\(Display.dateTime(row.info.created))</time></td>\
                <td>\(last)</td><td class="num">\(Display.grouped(Int(clamping: row.info.head)))</td>\
                <td>\(sandboxes.joined(separator: "<br>"))</td></tr>
                """
        }
        let tenantHead: HTML = viewer.isOperator ? "<th scope=\"col\">Tenant</th>" : ""
        let first = (page - 1) * size + 1
        return """
            <p class="muted">\(Display.grouped(rows.count)) sessions; \(first)–\(first + shown.count - 1) shown.</p>
            <table><caption class="muted">Newest activity first; times in UTC</caption><thead><tr>\
            <th scope="col">Session</th>\(tenantHead)<th scope="col">Status</th><th scope="col">Brain</th>\
            <th scope="col" class="num">Tokens in / out</th><th scope="col">Created</th><th scope="col">Last event</th>\
            <th scope="col" class="num">Events</th><th scope="col">Sandboxes in use</th></tr></thead>
            <tbody>\(body)</tbody></table>
            \(pager(page: page, pages: pages, path: "/console/sessions", query: filter.query))
            """
    }

    func pager(page: Int, pages: Int, path: String, query: [(String, String?)]) -> HTML {
        guard pages > 1 else { return "" }
        let previous: HTML =
            page > 1
            ? "<a rel=\"prev\" href=\"\(ConsoleHTTP.link(path, query + [("page", String(page - 1))]))\">← Newer</a>"
            : "<span class=\"gone\">← Newer</span>"
        let next: HTML =
            page < pages
            ? "<a rel=\"next\" href=\"\(ConsoleHTTP.link(path, query + [("page", String(page + 1))]))\">Older →</a>"
            : "<span class=\"gone\">Older →</span>"
        return "<nav class=\"pager\" aria-label=\"Pages\">\(previous)<span>page \(page) of \(pages)</span>\(next)</nav>"
    }

    // MARK: One session

    func sessionPage(_ info: SessionInfo, request: Request, access: ConsoleAccess) async throws -> HTML {
        let store = try sessionStore()
        let summary = try await console.summaries.summary(of: info.id, head: info.head, store: store)
        let (state, error) = await consoleState(info, summary)
        let size = UInt64(configuration.console.timelinePageSize)
        let latestStart = info.head >= size ? info.head - size + 1 : 1
        let start = min(max(try queryNumber(request, "from") ?? latestStart, 1), max(latestStart, 1))
        // One event more in front: a brain call's duration runs from the event before it.
        let page = try await store.readPage(info.id, from: start > 1 ? start - 1 : 1, limit: Int(size) + 1)
        var previous: Date?
        var rows: [HTML] = []
        for event in page.events {
            defer { previous = event.time }
            guard event.seq >= start else { continue }
            let open =
                event.type == HarnessEvent.toolIntent
                && summary.openIntents[event.data["toolUseID"]?.stringValue ?? ""] != nil
            rows.append(EventRow(session: info.id, event: event, previousTime: previous, open: open).render())
        }
        let end = start + UInt64(rows.count) - 1
        let isLatest = end >= info.head
        let link = "/console/sessions/\(info.id.rawValue)"
        func at(_ seq: UInt64) -> String { ConsoleHTTP.link(link, [("from", String(seq))]) }
        var navigation: [HTML] = []
        if start > 1 {
            navigation.append("<a href=\"\(at(1))\">First</a>")
            navigation.append("<a rel=\"prev\" href=\"\(at(start > size ? start - size : 1))\">← Earlier</a>")
        }
        navigation.append(
            "<span>events \(start)–<span id=\"event-last\">\(max(start, end))</span> of <span id=\"event-count\">\(info.head)</span></span>"
        )
        if !isLatest {
            navigation.append("<a rel=\"next\" href=\"\(at(end + 1))\">Later →</a>")
            navigation.append("<a href=\"\(link)\">Latest</a>")
        }
        let live: HTML =
            isLatest
            ? " data-stream=\"\(link)/stream\" data-head=\"\(info.head)\" data-keep=\"2000\""
            : ""
        let liveNote: HTML =
            isLatest
            ? "<p id=\"live-status\" role=\"status\">Without JavaScript, reload for new events.</p>"
            : "<p class=\"muted\">An earlier part of the session: <a href=\"\(link)\">the latest events</a> update live.</p>"
        let body: HTML = """
            <h1>Session <span class="mono">\(info.id)</span></h1>
            <section id="summary" aria-label="Summary">\(sessionSummary(info, summary, state: state, error: error, viewer: access.viewer))</section>
            <h2 id="timeline-heading">Timeline</h2>
            <p class="muted">Each event opens to its JSON. Times are UTC.</p>
            <nav class="pager" aria-label="Timeline pages">\(navigation.joined())</nav>
            \(liveNote)
            <ol id="timeline" class="timeline" aria-labelledby="timeline-heading"\(live)>
            \(rows)</ol>
            """
        return ConsoleLayout(title: "Session \(info.id)", section: .sessions, access: access, body: body).render()
    }

    /// The head of a session page: what it is, how it stands, where its time went and how its
    /// tools did. The live stream sends it again as the session moves.
    func sessionSummary(
        _ info: SessionInfo, _ summary: SessionSummary, state: String, error: String?, viewer: ConsoleViewer
    ) -> HTML {
        let sandboxes: [HTML] = summary.everySandbox.map { id in
            let name = summary.sandboxes.first { $0.value == id }?.key
            let provision = summary.provisions[id]
            let how = provision.map { " (\($0.path), \(Display.duration(milliseconds: $0.milliseconds)))" } ?? ""
            return
                "<a class=\"mono\" href=\"/console/sandboxes/\(id)\">\(id)</a>\(name.map { " " + $0 } ?? " (gone)")\(how)"
        }
        let tenant: HTML = viewer.isOperator ? "<dt>Tenant</dt><dd>\(info.tenant)</dd>" : ""
        let failure: HTML =
            error.map { "<p class=\"notice error\">The last run failed: \(Display.text($0, limit: 2000))</p>" } ?? ""
        let fork: HTML = info.forkedFrom.map { "<dt>Forked from</dt><dd>\(JSONCodec.string(Self.json($0)))</dd>" } ?? ""
        let ended: HTML = summary.endReason.map { " (\($0))" } ?? ""
        return """
            \(failure)<dl class="facts">\(tenant)\
            <dt>Status</dt><dd><span class="badge s-\(state)">\(state)</span>\(ended)</dd>\
            <dt>Brain</dt><dd>\(summary.brain ?? "–")</dd>\
            <dt>Task</dt><dd>\(summary.task.map { Display.text($0, limit: 300) } ?? "–")</dd>\
            <dt>Turns</dt><dd>\(summary.turns)</dd>\
            <dt>Tokens</dt><dd>\(Display.grouped(summary.tokensIn)) in / \(Display.grouped(summary.tokensOut)) out</dd>\
            <dt>Created</dt><dd>\(Display.dateTime(info.created)) UTC</dd>\
            <dt>Last event</dt><dd>\(summary.lastTime.map { Display.dateTime($0) + " UTC" } ?? "–") \(summary.lastType ?? "")</dd>\
            <dt>Events</dt><dd>\(summary.head) (epoch \(info.epoch); \(summary.wakes) wakes, \(summary.compactions) compactions)</dd>\
            <dt>Problems</dt><dd>\(summary.toolErrors) tool errors, \(summary.unknownResults) unknown outcomes, \(summary.brainErrors) brain errors</dd>\
            \(fork)<dt>Sandboxes</dt><dd>\(sandboxes.isEmpty ? "none yet" : sandboxes.joined(separator: "<br>"))</dd></dl>
            \(ConsoleCharts.strip(summary))
            \(toolTable(summary))
            """
    }

    static func json(_ origin: some Encodable) -> JSONValue {
        guard let data = try? JSONResponse.encoder.encode(origin), let value = try? JSONCodec.decode(Array(data)) else {
            return .null
        }
        return value
    }

    func toolTable(_ summary: SessionSummary) -> HTML {
        guard !summary.tools.isEmpty else { return "" }
        let rows: [HTML] = summary.tools.sorted { $0.key < $1.key }.map { name, stats in
            let p50 = SessionSummary.percentile(stats.durations, 0.5).map { Display.duration(milliseconds: $0) } ?? "–"
            let p95 = SessionSummary.percentile(stats.durations, 0.95).map { Display.duration(milliseconds: $0) } ?? "–"
            let total = stats.durations.isEmpty ? "–" : Display.duration(milliseconds: stats.totalMilliseconds)
            return """
                <tr><td>\(name)</td><td class="num">\(stats.calls)</td><td class="num">\(stats.ok)</td>\
                <td class="num">\(stats.errors)</td><td class="num">\(stats.unknown)</td><td class="num">\(p50)</td>\
                <td class="num">\(p95)</td><td class="num">\(total)</td></tr>
                """
        }
        return """
            <table class="tools"><caption class="muted">Tool calls</caption><thead><tr><th scope="col">Tool</th>\
            <th scope="col" class="num">Calls</th><th scope="col" class="num">OK</th><th scope="col" class="num">Errors</th>\
            <th scope="col" class="num">Unknown</th><th scope="col" class="num">p50</th><th scope="col" class="num">p95</th>\
            <th scope="col" class="num">Total</th></tr></thead><tbody>\(rows)</tbody></table>
            """
    }

    // MARK: The live timeline

    /// The timeline's live tail as server-sent events: the session's tail read a page at a
    /// time, each page sent as one `rows` message of rendered rows (its id the last seq, so a
    /// reconnect resumes with Last-Event-ID), and the summary again at most once a second.
    /// Nothing is dropped: a slow browser slows the reading, and the log keeps everything.
    func timelineStream(
        _ info: SessionInfo, from start: UInt64, viewer: ConsoleViewer, request: Request,
        context: CorralRequestContext, auth: AuthMode
    ) -> Response {
        var headers = ConsoleHTTP.headers(contentType: "text/event-stream; charset=utf-8")
        headers[.cacheControl] = "no-store"
        let keepAlive = configuration.streamKeepAlive
        let id = info.id
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                try await writer.write(ByteBuffer(string: ": corral console \(id)\nretry: 3000\n\n"))
                // Frames are made in a task of their own and handed over one at a time: a send
                // waits until the frame is taken, so a slow browser slows the reading and
                // nothing is dropped. The writer's loop ends when the client goes away (a
                // write fails), at a graceful shutdown, or when the producer ends (the login
                // ended, the session is gone).
                let frames = AsyncChannel<String>()
                let producer = Task {
                    defer { frames.finish() }
                    try await timelineFrames(
                        id, from: start, viewer: viewer, keepAlive: keepAlive, frames: frames,
                        stillAllowed: { (try? await consoleAccess(request, context, auth: auth)) != nil })
                }
                defer { producer.cancel() }
                try await withGracefulShutdownHandler {
                    for await frame in frames {
                        try await writer.write(ByteBuffer(string: frame))
                    }
                } onGracefulShutdown: {
                    producer.cancel()
                }
                try await writer.finish(nil)
            })
    }

    /// The frames of a live timeline, from `start` on, until cancelled or `stillAllowed`
    /// says the login ended.
    func timelineFrames(
        _ id: SessionID, from start: UInt64, viewer: ConsoleViewer, keepAlive: Duration,
        frames: AsyncChannel<String>, stillAllowed: @Sendable () async -> Bool
    ) async throws {
        let store = try sessionStore()
        var next = start
        // The event before the first one sent: a brain call's duration runs from it.
        var previous = start > 1 ? try await store.readPage(id, from: start - 1, limit: 1).events.first?.time : nil
        var lastSummary = ContinuousClock.now - .seconds(10)
        var lastCheck = ContinuousClock.now
        while !Task.isCancelled {
            // A login that ended (logged out, token revoked) keeps no stream open.
            if ContinuousClock.now - lastCheck > .seconds(5) {
                lastCheck = ContinuousClock.now
                guard await stillAllowed() else { return }
            }
            let page = try await store.readPage(id, from: next, limit: 500)
            if page.events.isEmpty {
                if try await Self.waitForHead(store, id, beyond: next - 1, orAfter: keepAlive) == nil {
                    await frames.send(": keep-alive\n\n")
                }
                continue
            }
            let summary = try await console.summaries.summary(of: id, after: page.events, store: store)
            var html = ""
            for event in page.events {
                let open =
                    event.type == HarnessEvent.toolIntent
                    && summary.openIntents[event.data["toolUseID"]?.stringValue ?? ""] != nil
                html += EventRow(session: id, event: event, previousTime: previous, open: open).render().text
                previous = event.time
            }
            let last = page.events[page.events.count - 1].seq
            next = last + 1
            var frame = Self.serverSentEvent("rows", html, id: last)
            let ended = page.events.contains { $0.type == HarnessEvent.sessionEnded }
            if ended || ContinuousClock.now - lastSummary >= .seconds(1) {
                lastSummary = ContinuousClock.now
                let current = try await store.session(id)
                let (state, error) = await consoleState(current, summary)
                let head = sessionSummary(current, summary, state: state, error: error, viewer: viewer)
                frame += Self.serverSentEvent("summary", head.text, id: nil)
            }
            await frames.send(frame)
        }
    }

    /// Server-sent event framing: every line of `data` gets its own `data:` field; the id
    /// comes last, so that a reader that sees it has the whole frame.
    static func serverSentEvent(_ name: String, _ data: String, id: UInt64?) -> String {
        var frame = "event: \(name)\n"
        for line in data.split(separator: "\n", omittingEmptySubsequences: false) {
            frame += "data: "
            frame += line.hasSuffix("\r") ? String(line.dropLast()) : String(line)
            frame += "\n"
        }
        if let id { frame += "id: \(id)\n" }
        return frame + "\n"
    }

    /// The new head once it moves past `seq`, or nil when `timeout` passed first.
    static func waitForHead(_ store: any SessionStore, _ id: SessionID, beyond seq: UInt64, orAfter timeout: Duration)
        async throws -> UInt64?
    {
        try await withThrowingTaskGroup(of: UInt64?.self) { group in
            group.addTask { try await store.waitForHead(id, beyond: seq) }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            let first = try await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }
}
