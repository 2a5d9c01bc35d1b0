import CorralCore
import CorralSandbox
import Foundation

/// The exec stream's request and lines, written and read by hand on the command line's path.
///
/// A `corral exec` through a local service is a short process, and JSONEncoder and
/// JSONDecoder are its most expensive first steps: each Codable type they meet for the first
/// time costs the Swift runtime type look-ups that scan every protocol conformance in the
/// binary. The shapes here are fixed and small, so they are written and read directly; a
/// line of any other shape (an error, a key this reader does not know) goes to JSONDecoder
/// as before. `ExecStreamWireTests` checks both ways against the Codable forms.
enum ExecStreamWire {
    /// `ExecRequest` as JSON, with sorted keys, as JSONEncoder would write it.
    static func encode(_ request: ExecRequest) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        out.append(contentsOf: Array(#"{"command":["#.utf8))
        for (index, word) in request.command.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            appendString(word, to: &out)
        }
        out.append(UInt8(ascii: "]"))
        if let env = request.env {
            out.append(contentsOf: Array(#","env":{"#.utf8))
            for (index, key) in env.keys.sorted().enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                appendString(key, to: &out)
                out.append(UInt8(ascii: ":"))
                appendString(env[key] ?? "", to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
        if let timeout = request.timeout {
            out.append(contentsOf: Array(#","timeout":"#.utf8))
            appendString(timeout.duration.compactDescription, to: &out)
        }
        if let workdir = request.workdir {
            out.append(contentsOf: Array(#","workdir":"#.utf8))
            appendString(workdir, to: &out)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    static func appendString(_ text: String, to out: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [92, 34])
            case UInt8(ascii: "\\"): out.append(contentsOf: [92, 92])
            case 10: out.append(contentsOf: [92, UInt8(ascii: "n")])
            case 13: out.append(contentsOf: [92, UInt8(ascii: "r")])
            case 9: out.append(contentsOf: [92, UInt8(ascii: "t")])
            case 0..<32:
                out.append(contentsOf: [92, UInt8(ascii: "u"), 48, 48, hex[Int(byte >> 4)], hex[Int(byte & 15)]])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// One line of the stream: output, or how the command ended. Any other line (an error,
    /// or a shape this reader does not know) is read by JSONDecoder.
    static func decode(_ line: [UInt8]) throws -> ExecStreamEvent {
        if let event = quickEvent(line) { return event }
        return try JSONDecoder().decode(ExecStreamEvent.self, from: Data(line))
    }

    /// The line read by hand; nil when it is not one of the two common shapes.
    static func quickEvent(_ line: [UInt8]) -> ExecStreamEvent? {
        var reader = Reader(bytes: line)
        var event = ExecStreamEvent()
        let read = reader.object { reader, key in
            switch key {
            case "stream":
                guard let value = reader.string() else { return false }
                event.stream = value
            case "data":
                guard let value = reader.string() else { return false }
                event.data = value
            case "status":
                var status = CommandStatus(exitCode: 0, timedOut: false, oomKilled: false, durationMilliseconds: 0)
                var seen = Set<String>()
                let read = reader.object { reader, key in
                    guard seen.insert(key).inserted else { return false }
                    switch key {
                    case "exitCode":
                        guard let value = reader.number(), let code = Int(exactly: value) else { return false }
                        status.exitCode = code
                    case "timedOut":
                        guard let value = reader.bool() else { return false }
                        status.timedOut = value
                    case "oomKilled":
                        guard let value = reader.bool() else { return false }
                        status.oomKilled = value
                    case "durationMilliseconds":
                        guard let value = reader.number() else { return false }
                        status.durationMilliseconds = value
                    default: return false
                    }
                    return true
                }
                guard read, seen.count == 4 else { return false }
                event.status = status
            default:
                return false
            }
            return true
        }
        guard read, reader.atEnd else { return nil }
        return event
    }

    /// A reader of the little JSON the quick path takes: objects, strings, numbers, booleans.
    struct Reader {
        let bytes: [UInt8]
        var index = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        var atEnd: Bool {
            mutating get {
                skipSpace()
                return index == bytes.count
            }
        }

        mutating func skipSpace() {
            while index < bytes.count, [32, 9, 10, 13].contains(bytes[index]) { index += 1 }
        }

        mutating func take(_ byte: UInt8) -> Bool {
            skipSpace()
            guard index < bytes.count, bytes[index] == byte else { return false }
            index += 1
            return true
        }

        /// Reads `{ "key": value, ... }`, handing each key to `member`, which reads its value.
        mutating func object(_ member: (inout Reader, String) -> Bool) -> Bool {
            guard take(UInt8(ascii: "{")) else { return false }
            if take(UInt8(ascii: "}")) { return true }
            repeat {
                guard let key = string(), take(UInt8(ascii: ":")), member(&self, key) else { return false }
            } while take(UInt8(ascii: ","))
            return take(UInt8(ascii: "}"))
        }

        mutating func string() -> String? {
            guard take(UInt8(ascii: "\"")) else { return nil }
            var out: [UInt8] = []
            while index < bytes.count {
                let byte = bytes[index]
                index += 1
                switch byte {
                case UInt8(ascii: "\""):
                    return String(validating: out, as: UTF8.self)
                case 92:
                    guard index < bytes.count else { return nil }
                    let escaped = bytes[index]
                    index += 1
                    switch escaped {
                    case UInt8(ascii: "\""), 92, UInt8(ascii: "/"): out.append(escaped)
                    case UInt8(ascii: "n"): out.append(10)
                    case UInt8(ascii: "r"): out.append(13)
                    case UInt8(ascii: "t"): out.append(9)
                    case UInt8(ascii: "b"): out.append(8)
                    case UInt8(ascii: "f"): out.append(12)
                    default: return nil  // \u and anything else: JSONDecoder reads the line
                    }
                case 0..<32:
                    return nil
                default:
                    out.append(byte)
                }
            }
            return nil
        }

        mutating func bool() -> Bool? {
            skipSpace()
            for (word, value) in [("true", true), ("false", false)] {
                let utf8 = Array(word.utf8)
                if bytes.count - index >= utf8.count, Array(bytes[index..<(index + utf8.count)]) == utf8 {
                    index += utf8.count
                    return value
                }
            }
            return nil
        }

        mutating func number() -> Double? {
            skipSpace()
            let start = index
            while index < bytes.count, "+-0123456789.eE".utf8.contains(bytes[index]) { index += 1 }
            guard index > start else { return nil }
            return Double(String(decoding: bytes[start..<index], as: UTF8.self))
        }
    }
}
