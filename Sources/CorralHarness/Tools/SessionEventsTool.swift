import CorralCore
import CorralSandbox
import CorralSession

/// corral's `session_events` tool: slices of the session's own log (getEvents), so that the
/// agent can read what a compaction summarised away. Read-only, so safe to repeat.
enum SessionEventsTool {
    static let maxLimit = 100
    static let defaultLimit = 20
    /// Per event, the data shown is cut past this many bytes.
    static let dataCap = 4000
    /// A filtered read scans at most this many events.
    static let scanCap = 20_000

    static func run(store: any SessionStore, session: SessionID, input: JSONValue) async throws -> ToolOutput {
        let limit: Int
        switch input["limit"] {
        case nil, .null?: limit = defaultLimit
        case let value?:
            guard let number = value.intValue, number >= 1 else {
                return .error("session_events: 'limit' must be a positive integer")
            }
            limit = Int(min(number, Int64(maxLimit)))
        }
        var from: UInt64?
        switch input["from"] {
        case nil, .null?: break
        case let value?:
            guard let number = value.intValue, number >= 1 else {
                return .error("session_events: 'from' must be a seq, 1 or more")
            }
            from = UInt64(number)
        }
        var types: Set<String>?
        switch input["types"] {
        case nil, .null?: break
        case .array(let items)?:
            let names = items.compactMap(\.stringValue)
            guard names.count == items.count else {
                return .error("session_events: 'types' must be an array of strings")
            }
            types = Set(names)
        case .string(let name)?: types = [name]
        default: return .error("session_events: 'types' must be an array of strings")
        }
        let head = try await store.session(session).head
        var events: [Event] = []
        var scanned = 0
        if let from {
            var next = from
            while events.count < limit, next <= head, scanned < scanCap {
                let page = try await store.readPage(
                    session, from: next, limit: types == nil ? limit - events.count : 512)
                guard !page.events.isEmpty else { break }
                scanned += page.events.count
                events += page.events.filter { types?.contains($0.type) ?? true }
                next = page.next
            }
            events = Array(events.prefix(limit))
        } else {
            // The latest events: read backwards.
            var end = head
            while events.count < limit, end >= 1, scanned < scanCap {
                let size = UInt64(types == nil ? limit - events.count : 512)
                let start = end > size ? end - size + 1 : 1
                let page = try await store.readPage(session, from: start, limit: Int(end - start + 1))
                scanned += page.events.count
                events = page.events.filter { types?.contains($0.type) ?? true } + events
                end = start - 1
            }
            events = Array(events.suffix(limit))
        }
        var lines = ["Session \(session): events 1 to \(head)."]
        if events.isEmpty {
            lines.append(
                from.map { $0 > head ? "Nothing at or after seq \($0)." : "No events match." } ?? "No events match.")
        }
        for event in events {
            var data = JSONCodec.string(event.data)
            if data.utf8.count > dataCap {
                data =
                    String(decoding: data.utf8.prefix(dataCap), as: UTF8.self) + "… [\(data.utf8.count) bytes in all]"
            }
            lines.append("#\(event.seq) \(event.type) \(event.data == .null ? "" : data)")
        }
        if scanned >= scanCap, events.count < limit {
            lines.append("[corral: stopped after scanning \(scanned) events; give 'from' to read further]")
        }
        return .success(lines.joined(separator: "\n"))
    }
}
