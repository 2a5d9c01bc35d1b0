import CorralCore
import CorralSession
import Foundation

/// `POST /v1/sessions`.
public struct CreateSessionRequest: Codable, Sendable, Hashable {
    public var id: String?
    public var metadata: [String: String]?

    public init(id: String? = nil, metadata: [String: String]? = nil) {
        self.id = id
        self.metadata = metadata
    }
}

/// One event to append: `type`, and optionally an `id` (to make a retry idempotent) and `data`.
public struct EventInput: Codable, Sendable, Hashable {
    public var id: String?
    public var type: String
    public var data: JSONValue?

    public func newEvent() throws -> NewEvent {
        NewEvent(id: try id.map(EventID.init(validating:)), type: type, data: data ?? .null)
    }
}

/// `POST /v1/sessions/{id}/events`.
public struct AppendEventsRequest: Codable, Sendable, Hashable {
    public var events: [EventInput]
    /// The seq the first event must get (the head + 1); a mismatch is a 409.
    public var expectedSeq: UInt64?
    /// The lease epoch the writer holds; an older one is a 409. Nil appends under the current
    /// lease, as any writer that does not take the session over does.
    public var epoch: UInt64?
    /// `fsync` (default), `group` or `none`.
    public var durability: String?

    public func storeDurability() throws -> Durability {
        switch durability ?? "fsync" {
        case "fsync": return .fsync
        case "group": return .groupCommit(maxDelay: .milliseconds(5))
        case "none": return .none
        case let other:
            throw CorralError.invalidArgument("unknown durability '\(other)'", hint: "use fsync, group or none")
        }
    }
}

/// What an append did (`AppendResult` on the wire).
public struct AppendEventsResponse: Codable, Sendable, Hashable {
    public var events: [AppendResult.Appended]
    /// Events this call wrote: 0 for a retry of an append that had landed.
    public var written: Int
    public var head: UInt64
    public var durable: Bool

    public init(_ result: AppendResult) {
        events = result.events
        written = result.written
        head = result.head
        durable = result.durable
    }
}

/// `GET /v1/sessions/{id}/events?from=&limit=`.
public struct EventPageResponse: Codable, Sendable, Hashable {
    public var events: [Event]
    public var next: UInt64
    public var head: UInt64
    public var hasMore: Bool

    public init(_ page: EventPage) {
        events = page.events
        next = page.next
        head = page.head
        hasMore = page.hasMore
    }
}

/// `POST /v1/sessions/{id}/fork`.
public struct ForkSessionRequest: Codable, Sendable, Hashable {
    /// The last seq the fork shares with its origin.
    public var at: UInt64
    public var id: String?
}

// Events cross the API exactly as the store keeps them (`ExactJSON`): through JSONEncoder and
// JSONDecoder, `1.0` in an event's data would come back as `1`, and times would lose digits.

extension AppendEventsRequest {
    /// The body, written exactly.
    public func exactJSON() -> [UInt8] {
        var object: [String: JSONValue] = [
            "events": .array(
                events.map { event in
                    var fields: [String: JSONValue] = ["type": .string(event.type)]
                    if let id = event.id { fields["id"] = .string(id) }
                    if let data = event.data { fields["data"] = data }
                    return .object(fields)
                })
        ]
        if let expectedSeq { object["expectedSeq"] = .int(Int64(clamping: expectedSeq)) }
        if let epoch { object["epoch"] = .int(Int64(clamping: epoch)) }
        if let durability { object["durability"] = .string(durability) }
        return Array(ExactJSON.write(.object(object)).utf8)
    }

    /// Reads a body parsed by `ExactJSON`, with errors that name the field.
    public init(exact value: JSONValue) throws {
        guard case .object(let object) = value else {
            throw CorralError.invalidArgument("the body should be an object, not \(value.typeName)")
        }
        if let unknown = object.keys.sorted().first(where: {
            !["events", "expectedSeq", "epoch", "durability"].contains($0)
        }) {
            throw CorralError.invalidArgument("unknown field '\(unknown.prefix(40))'")
        }
        guard case .array(let list)? = object["events"] else {
            throw CorralError.invalidArgument("'events' should be an array")
        }
        events = try list.enumerated().map { index, entry in
            guard case .object(let fields) = entry else {
                throw CorralError.invalidArgument("'events[\(index)]' should be an object")
            }
            guard let type = fields["type"]?.stringValue else {
                throw CorralError.invalidArgument("'events[\(index)].type' should be a string")
            }
            var id: String?
            if let raw = fields["id"], raw != .null {
                guard let text = raw.stringValue else {
                    throw CorralError.invalidArgument("'events[\(index)].id' should be a string")
                }
                id = text
            }
            return EventInput(id: id, type: type, data: fields["data"])
        }
        func count(_ name: String) throws -> UInt64? {
            guard let raw = object[name], raw != .null else { return nil }
            guard let number = raw.intValue, number >= 0 else {
                throw CorralError.invalidArgument("'\(name)' should be a non-negative whole number")
            }
            return UInt64(number)
        }
        expectedSeq = try count("expectedSeq")
        epoch = try count("epoch")
        if let raw = object["durability"], raw != .null {
            guard let text = raw.stringValue else {
                throw CorralError.invalidArgument("'durability' should be a string")
            }
            durability = text
        }
    }
}

extension EventPage {
    /// `GET /v1/sessions/{id}/events`, written exactly: events as their `jsonLine`s.
    public var exactJSON: String {
        "{\"events\":[" + events.map(\.jsonLine).joined(separator: ",")
            + "],\"hasMore\":\(hasMore),\"head\":\(head),\"next\":\(next)}"
    }

    /// Reads what `exactJSON` writes.
    public init(exact value: JSONValue) throws {
        guard let list = value["events"]?.arrayValue, let head = value["head"]?.intValue,
            let next = value["next"]?.intValue
        else { throw CorralError(.internalError, "the service's page of events is malformed") }
        self.init(events: try list.map(Event.init(json:)), next: UInt64(max(next, 0)), head: UInt64(max(head, 0)))
    }
}
