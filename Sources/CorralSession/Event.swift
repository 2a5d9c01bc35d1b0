import CorralCore
import Foundation

/// The id of one event, unique within its session. Callers may supply their own (a tool-use id,
/// a request id) to make retries idempotent; otherwise the store makes one (`ev-` and 16
/// random base-36 characters).
///
/// 1 to 128 characters of visible ASCII (`!` to `~`): no spaces, no control characters.
public struct EventID: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public let rawValue: String
    public static let maxLength = 128

    public init(unchecked rawValue: String) { self.rawValue = rawValue }

    public init?(rawValue: String) {
        guard Self.problem(with: rawValue) == nil else { return nil }
        self.rawValue = rawValue
    }

    public init(validating text: String) throws {
        if let problem = Self.problem(with: text) {
            throw CorralError(
                .invalidArgument, "invalid event id '\(text.prefix(80))': \(problem)",
                hint: "event ids are 1-\(Self.maxLength) characters of visible ASCII, without spaces")
        }
        self.rawValue = text
    }

    public static func random() -> EventID {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }

    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> EventID {
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8)
        var bytes = Array("ev-".utf8)
        var bits = generator.next()
        for index in 0..<16 {
            if index == 8 { bits = generator.next() }
            bytes.append(alphabet[Int(bits % 36)])
            bits /= 36
        }
        return EventID(unchecked: String(decoding: bytes, as: UTF8.self))
    }

    public var description: String { rawValue }
    public static func < (lhs: EventID, rhs: EventID) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(from decoder: any Decoder) throws {
        try self.init(validating: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    static func problem(with text: String) -> String? {
        let bytes = text.utf8
        if bytes.isEmpty { return "it is empty" }
        if bytes.count > maxLength { return "it is longer than \(maxLength) characters" }
        for (index, byte) in bytes.enumerated() where byte < 0x21 || byte > 0x7E {
            return "character \(index + 1) is not visible ASCII"
        }
        return nil
    }
}

/// An event as a writer hands it to `append`: the store assigns its seq, time and epoch.
public struct NewEvent: Sendable, Hashable {
    /// Supply an id to make a retried append recognisable; nil lets the store make one.
    public var id: EventID?
    /// What happened: `user.message`, `tool.intent`, ... Free text, 1 to 255 bytes of UTF-8
    /// without control characters.
    public var type: String
    public var data: JSONValue

    public init(id: EventID? = nil, type: String, data: JSONValue = .null) {
        self.id = id
        self.type = type
        self.data = data
    }

    public static let maxTypeLength = 255

    /// Reads the line format `corral session append` takes: a JSON object with `type`, and
    /// optionally `id` and `data`. Any other key is refused, so that a typo is not lost.
    public init(json bytes: UnsafeBufferPointer<UInt8>) throws {
        let value: JSONValue
        do {
            value = try JSONCodec.decode(bytes)
        } catch {
            throw CorralError(
                .invalidArgument, "\(error.description)",
                hint:
                    #"each event is one JSON object on one line, such as {"type":"user.message","data":{"text":"hi"}}"#)
        }
        guard case .object(let members) = value else {
            throw CorralError(
                .invalidArgument, "an event must be a JSON object, not \(value.typeName)",
                hint: #"write {"type":"user.message","data":{...}}"#)
        }
        if let unknown = members.keys.sorted().first(where: { !["id", "type", "data"].contains($0) }) {
            throw CorralError(
                .invalidArgument, "unknown event field '\(unknown.prefix(40))'",
                hint: "an event has 'type', and optionally 'id' and 'data'")
        }
        guard case .string(let type)? = members["type"] else {
            throw CorralError(
                .invalidArgument, "the event has no 'type' string",
                hint: #"add a type, such as "type":"user.message""#)
        }
        var id: EventID?
        switch members["id"] {
        case nil, .null?: id = nil
        case .string(let text)?: id = try EventID(validating: text)
        case let other?: throw CorralError(.invalidArgument, "the event's 'id' must be a string, not \(other.typeName)")
        }
        self.init(id: id, type: type, data: members["data"] ?? .null)
    }

    public init(json text: String) throws {
        var copy = text
        self = try copy.withUTF8 { try NewEvent(json: $0) }
    }
}

/// One event of a session's log: `{seq, id, type, time, epoch, data}`.
public struct Event: Sendable, Hashable, Codable {
    /// Position in the session, from 1, without gaps.
    public var seq: UInt64
    public var id: EventID
    public var type: String
    /// When the store appended it (wall clock, microsecond precision).
    public var time: Date
    /// The epoch of the lease that appended it.
    public var epoch: UInt64
    public var data: JSONValue

    public init(seq: UInt64, id: EventID, type: String, time: Date, epoch: UInt64, data: JSONValue) {
        self.seq = seq
        self.id = id
        self.type = type
        self.time = time
        self.epoch = epoch
        self.data = data
    }

    /// One line of compact JSON, keys in the order `seq, id, type, time, epoch, data`; what
    /// `corral session show --json` prints.
    public var jsonLine: String {
        var out: [UInt8] = []
        out.reserveCapacity(96)
        out.append(contentsOf: #"{"seq":"#.utf8)
        JSONCodec.writeInteger(Int64(bitPattern: seq), to: &out)
        out.append(contentsOf: #","id":"#.utf8)
        JSONCodec.writeString(id.rawValue, to: &out)
        out.append(contentsOf: #","type":"#.utf8)
        JSONCodec.writeString(type, to: &out)
        out.append(contentsOf: #","time":""#.utf8)
        Timestamp.append(nanoseconds: Timestamp.nanoseconds(time), to: &out)
        out.append(contentsOf: #"","epoch":"#.utf8)
        JSONCodec.writeInteger(Int64(bitPattern: epoch), to: &out)
        out.append(contentsOf: #","data":"#.utf8)
        JSONCodec.write(data, to: &out)
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }
}

/// Where a forked session came from.
public struct ForkOrigin: Sendable, Hashable, Codable {
    public var session: SessionID
    /// The last seq the fork shares with its parent.
    public var seq: UInt64

    public init(session: SessionID, seq: UInt64) {
        self.session = session
        self.seq = seq
    }
}
