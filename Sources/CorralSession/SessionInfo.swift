import CorralCore
import Foundation

/// What `session(_:)` and `list()` tell about a session.
public struct SessionInfo: Sendable, Hashable, Codable {
    public var id: SessionID
    public var tenant: TenantID
    public var created: Date
    public var metadata: [String: String]
    public var forkedFrom: ForkOrigin?
    /// The seq of the last event; 0 while the session is empty.
    public var head: UInt64
    /// The current lease epoch: 1 at creation, one more for every wake.
    public var epoch: UInt64
    /// Set by `list()` when the session cannot be opened (damaged files): what is wrong.
    /// The other fields then hold what could be read, or zero values.
    public var problem: String?

    public init(
        id: SessionID, tenant: TenantID, created: Date, metadata: [String: String], forkedFrom: ForkOrigin?,
        head: UInt64, epoch: UInt64, problem: String? = nil
    ) {
        self.id = id
        self.tenant = tenant
        self.created = created
        self.metadata = metadata
        self.forkedFrom = forkedFrom
        self.head = head
        self.epoch = epoch
        self.problem = problem
    }

    /// The seq the next appended event will get: what `expectedSeq` should say.
    public var nextSeq: UInt64 { head + 1 }
}

/// The right to append to one session. `wake` makes a new one with the next epoch; from then
/// on, appends under an older lease are refused, which fences off a harness that was replaced
/// but is still running.
public struct Lease: Sendable, Hashable, Codable, CustomStringConvertible {
    public var session: SessionID
    public var epoch: UInt64

    public init(session: SessionID, epoch: UInt64) {
        self.session = session
        self.epoch = epoch
    }

    public var description: String { "\(session)@\(epoch)" }
}

/// When `append` returns, relative to the disk.
public enum Durability: Sendable, Hashable, CustomStringConvertible {
    /// Returns after an fdatasync that covers the events. Appends that overlap in time may
    /// share one fdatasync; none returns before its own events are on disk.
    case fsync
    /// Returns once the events are written (readable, and safe from a crash of this process);
    /// an fdatasync covering them starts within `maxDelay` and is shared by every append made
    /// meanwhile. A machine crash loses at most the appends of that window. `sync(_:)` waits
    /// for it.
    case groupCommit(maxDelay: Duration)
    /// Returns once the events are written; they reach the disk when the kernel flushes them
    /// (or at the next `.fsync` append or `sync(_:)`).
    case none

    public var description: String {
        switch self {
        case .fsync: "fsync"
        case .groupCommit(let delay): "group commit (\(delay.compactDescription))"
        case .none: "none"
        }
    }
}

/// What an append did.
public struct AppendResult: Sendable, Hashable {
    /// The seq and id of each event of the call, in order, including those a retry found
    /// already stored.
    public var events: [Appended]
    /// How many events this call wrote; 0 when it was a retry of an append that had landed.
    public var written: Int
    /// The session's head after the call.
    public var head: UInt64
    /// True when the events were on disk (fdatasync done) before the call returned.
    public var durable: Bool

    public struct Appended: Sendable, Hashable, Codable {
        public var seq: UInt64
        public var id: EventID

        public init(seq: UInt64, id: EventID) {
            self.seq = seq
            self.id = id
        }
    }

    public init(events: [Appended], written: Int, head: UInt64, durable: Bool) {
        self.events = events
        self.written = written
        self.head = head
        self.durable = durable
    }

    public var firstSeq: UInt64 { events.first?.seq ?? head + 1 }
    public var lastSeq: UInt64 { events.last?.seq ?? head }
}

/// One page of a read: events in seq order, and where the next page starts.
public struct EventPage: Sendable, Hashable {
    public var events: [Event]
    /// Pass as `from` to read on.
    public var next: UInt64
    /// The session's head when the page was read.
    public var head: UInt64

    public init(events: [Event], next: UInt64, head: UInt64) {
        self.events = events
        self.next = next
        self.head = head
    }

    /// True while events at `next` or later existed when the page was read.
    public var hasMore: Bool { next <= head }
}
