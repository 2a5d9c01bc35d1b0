import CorralCore
import Foundation

/// JSON exactly as the store reads and writes it: `1.0` stays a double, `1` an integer, times
/// keep their microseconds. What a service and its clients use for events, so that an event
/// reads back through HTTP exactly as it reads back from disk.
public enum ExactJSON {
    /// Parses one JSON value; errors say where the text went wrong.
    public static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        do {
            return try JSONCodec.decode(bytes)
        } catch {
            throw CorralError.invalidArgument(error.description)
        }
    }

    public static func write(_ value: JSONValue) -> String {
        String(decoding: JSONCodec.encode(value), as: UTF8.self)
    }
}

extension Event {
    /// Reads an event from its `jsonLine` form, parsed by `ExactJSON`.
    public init(json value: JSONValue) throws {
        func field(_ name: String) throws -> JSONValue {
            guard let member = value[name] else { throw CorralError.invalidArgument("an event without '\(name)'") }
            return member
        }
        guard let seq = try field("seq").intValue, seq > 0, let epoch = try field("epoch").intValue, epoch > 0 else {
            throw CorralError.invalidArgument("an event's seq and epoch must be positive integers")
        }
        guard let id = try field("id").stringValue, let type = try field("type").stringValue,
            let time = try field("time").stringValue
        else { throw CorralError.invalidArgument("an event's id, type and time must be strings") }
        guard let nanoseconds = Timestamp.parse(time) else {
            throw CorralError.invalidArgument("an event's time '\(time.prefix(40))' is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
        }
        self.init(
            seq: UInt64(seq), id: try EventID(validating: id), type: type,
            time: Timestamp.date(nanoseconds: nanoseconds),
            epoch: UInt64(epoch),
            data: value["data"] ?? .null)
    }
}
