import CorralAPI
import CorralCore
import CorralHost
import CorralSession
import Foundation
import Hummingbird

/// A session as the console lists it.
struct ConsoleSessionRow: Sendable {
    var info: SessionInfo
    var summary: SessionSummary
    /// running, ended, failed, stopped, idle, damaged.
    var state: String
    /// Why the last run in this service failed.
    var error: String?
}

/// Which sessions the list shows: `?status=&brain=&tenant=&q=&page=`.
struct ConsoleSessionFilter: Sendable {
    var status: String?
    var brain: String?
    var tenant: String?
    var text: String?
    var page = 1

    static let states = ["running", "ended", "failed", "stopped", "idle", "damaged"]
    static let brains = ["anthropic", "openai", "scripted", "none"]

    init(_ request: Request) {
        let query = request.uri.queryParameters
        func value(_ name: String) -> String? {
            guard let text = query[Substring(name)].map(String.init), !text.isEmpty else { return nil }
            return String(text.prefix(200))
        }
        status = value("status").flatMap { Self.states.contains($0) ? $0 : nil }
        brain = value("brain").flatMap { Self.brains.contains($0) ? $0 : nil }
        tenant = value("tenant")
        text = value("q")?.lowercased()
        page = max(1, value("page").flatMap { Int($0) } ?? 1)
    }

    func matches(_ row: ConsoleSessionRow) -> Bool {
        if let status, row.state != status { return false }
        if let brain {
            if brain == "none" ? row.summary.brainProvider != nil : row.summary.brainProvider != brain { return false }
        }
        if let tenant, row.info.tenant.rawValue != tenant { return false }
        if let text {
            let haystack = [row.info.id.rawValue, row.summary.task ?? "", row.summary.brainModel ?? ""]
            if !haystack.contains(where: { $0.lowercased().contains(text) }) { return false }
        }
        return true
    }

    var query: [(String, String?)] {
        [("status", status), ("brain", brain), ("tenant", tenant), ("q", text)]
    }
}

extension CorralServer {
    /// The sessions `viewer` may see, newest activity first, with their summaries.
    func consoleSessionRows(_ viewer: ConsoleViewer) async throws -> [ConsoleSessionRow] {
        let store = try sessionStore()
        let all = try await store.list()
        await console.summaries.keep(only: Set(all.map(\.id)))
        var rows: [ConsoleSessionRow] = []
        for info in all where viewer.sees(info.tenant) {
            rows.append(await consoleRow(info, store: store))
        }
        return rows.sorted {
            ($0.summary.lastTime ?? $0.info.created, $0.info.id.rawValue)
                > ($1.summary.lastTime ?? $1.info.created, $1.info.id.rawValue)
        }
    }

    func consoleRow(_ info: SessionInfo, store: any SessionStore) async -> ConsoleSessionRow {
        guard info.problem == nil,
            let summary = try? await console.summaries.summary(of: info.id, head: info.head, store: store)
        else {
            return ConsoleSessionRow(info: info, summary: SessionSummary(), state: "damaged", error: info.problem)
        }
        let (state, error) = await consoleState(info, summary)
        return ConsoleSessionRow(info: info, summary: summary, state: state, error: error)
    }

    /// Whether a run goes on in this service, and how the last one ended.
    func consoleState(_ info: SessionInfo, _ summary: SessionSummary) async -> (String, String?) {
        let harness = await workers.status(info.id)
        if harness.state == "running" { return ("running", nil) }
        if summary.ended { return ("ended", nil) }
        switch harness.lastOutcome {
        case "error"?: return ("failed", harness.lastError)
        case "stopped"?: return ("stopped", nil)
        default: return ("idle", nil)
        }
    }

    /// The session a console URL names, if `viewer` may see it; otherwise the same not-found
    /// whether it is missing or another tenant's.
    func consoleSession(_ text: String, viewer: ConsoleViewer) async throws -> SessionInfo {
        let notFound = CorralError.notFound("no session \(text.prefix(64))")
        guard let id = SessionID(text) else { throw notFound }
        let info: SessionInfo
        do {
            info = try await sessionStore().session(id)
        } catch let error as CorralError where error.code == .notFound {
            throw notFound
        }
        guard viewer.sees(info.tenant) else { throw notFound }
        return info
    }
}
