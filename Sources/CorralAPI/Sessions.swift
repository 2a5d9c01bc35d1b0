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
