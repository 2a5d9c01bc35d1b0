/// A compact JSON writer and a strict JSON reader for `JSONValue`.
///
/// The one JSON codec of the project: session events are stored as JSON text (reading a
/// slice decodes every event in it), and brain requests and answers are JSON bodies, so both
/// directions sit on hot paths; Foundation's coders go through `Codable` and are an order of
/// magnitude slower. Output is deterministic: object keys sorted, no spaces, doubles keep a
/// fraction (`1.0`) so that a value reads back as what was written.
public enum JSONCodec {
    /// Deepest nesting the reader accepts; deeper input is refused rather than risking the stack.
    public static let maxDepth = 512

    public struct ReadError: Error, Sendable, CustomStringConvertible {
        public var offset: Int
        public var reason: String
        public var description: String { "malformed JSON at byte \(offset + 1): \(reason)" }
    }

    // MARK: Writing

    public static func encode(_ value: JSONValue) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        write(value, to: &out)
        return out
    }

    /// The text of `value`.
    public static func string(_ value: JSONValue) -> String {
        String(decoding: encode(value), as: UTF8.self)
    }

    public static func write(_ value: JSONValue, to out: inout [UInt8]) {
        switch value {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let flag): out.append(contentsOf: (flag ? "true" : "false").utf8)
        case .int(let number): writeInteger(number, to: &out)
        case .double(let number):
            // Non-finite numbers have no JSON spelling: the session store refuses them before
            // this point (`unencodable`); anywhere else null is what a reader can take.
            if !number.isFinite {
                out.append(contentsOf: "null".utf8)
            } else if number == number.rounded(), abs(number) < 1e15 {
                writeInteger(Int64(number), to: &out)
                out.append(contentsOf: ".0".utf8)
            } else {
                out.append(contentsOf: number.description.utf8)
            }
        case .string(let text): writeString(text, to: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                write(item, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (index, member) in members.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                writeString(member.key, to: &out)
                out.append(UInt8(ascii: ":"))
                write(member.value, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    public static func writeInteger(_ value: Int64, to out: inout [UInt8]) {
        if value == 0 {
            out.append(UInt8(ascii: "0"))
            return
        }
        var magnitude = value.magnitude
        if value < 0 { out.append(UInt8(ascii: "-")) }
        let start = out.count
        while magnitude > 0 {
            out.append(UInt8(ascii: "0") + UInt8(magnitude % 10))
            magnitude /= 10
        }
        out[start...].reverse()
    }

    public static func writeString(_ text: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var copy = text
        copy.withUTF8 { bytes in writeEscaped(bytes, to: &out) }
        out.append(UInt8(ascii: "\""))
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    public static func writeEscaped(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        var runStart = 0
        for index in 0..<bytes.count {
            let byte = bytes[index]
            guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
            if runStart < index { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index])) }
            runStart = index + 1
            out.append(UInt8(ascii: "\\"))
            switch byte {
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\""))
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
            case 0x0A: out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(UInt8(ascii: "r"))
            case 0x09: out.append(UInt8(ascii: "t"))
            case 0x08: out.append(UInt8(ascii: "b"))
            case 0x0C: out.append(UInt8(ascii: "f"))
            default:
                out.append(contentsOf: "u00".utf8)
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0xF)])
            }
        }
        if runStart < bytes.count { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...])) }
    }

    /// The first thing in `value` that has no JSON spelling, for an error message; nil when
    /// everything can be written. The path is only spelled out once a problem is found.
    public static func unencodable(_ value: JSONValue) -> String? {
        guard let (number, path) = firstNonFinite(value) else { return nil }
        return "data\(path) is \(number), which JSON cannot represent"
    }

    private static func firstNonFinite(_ value: JSONValue) -> (Double, String)? {
        switch value {
        case .double(let number) where !number.isFinite:
            return (number, "")
        case .array(let items):
            for (index, item) in items.enumerated() {
                if let (number, path) = firstNonFinite(item) { return (number, "[\(index)]" + path) }
            }
            return nil
        case .object(let members):
            for (key, member) in members {
                if let (number, path) = firstNonFinite(member) { return (number, ".\(key)" + path) }
            }
            return nil
        default:
            return nil
        }
    }

    // MARK: Reading

    public static func decode(_ bytes: [UInt8]) throws(ReadError) -> JSONValue {
        try bytes.withUnsafeBufferPointer { (buffer) throws(ReadError) -> JSONValue in try decode(buffer) }
    }

    public static func decode(_ text: String) throws(ReadError) -> JSONValue {
        var copy = text
        let result = copy.withUTF8 { buffer in Result { () throws(ReadError) -> JSONValue in try decode(buffer) } }
        return try result.get()
    }

    /// Parses exactly one JSON value, with optional whitespace around it.
    public static func decode(_ bytes: UnsafeBufferPointer<UInt8>) throws(ReadError) -> JSONValue {
        var reader = Reader(bytes: bytes)
        reader.skipWhitespace()
        let value = try reader.readValue(depth: 0)
        reader.skipWhitespace()
        guard reader.index == bytes.count else { throw reader.error("unexpected text after the value") }
        return value
    }

    struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        func error(_ reason: String) -> ReadError { ReadError(offset: min(index, bytes.count), reason: reason) }

        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x0A, 0x0D, 0x09: index += 1
                default: return
                }
            }
        }

        mutating func readValue(depth: Int) throws(ReadError) -> JSONValue {
            guard index < bytes.count else { throw error("unexpected end of input") }
            switch bytes[index] {
            case UInt8(ascii: "{"): return try readObject(depth: depth + 1)
            case UInt8(ascii: "["): return try readArray(depth: depth + 1)
            case UInt8(ascii: "\""): return .string(try readString())
            case UInt8(ascii: "t"): try expectWord("true"); return .bool(true)
            case UInt8(ascii: "f"): try expectWord("false"); return .bool(false)
            case UInt8(ascii: "n"): try expectWord("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try readNumber()
            default: throw error("unexpected character '\(printable(bytes[index]))'")
            }
        }

        private func printable(_ byte: UInt8) -> String {
            (0x21...0x7E).contains(byte) ? String(UnicodeScalar(byte)) : "\\x" + String(byte, radix: 16)
        }

        private mutating func expectWord(_ word: StaticString) throws(ReadError) {
            let count = word.utf8CodeUnitCount
            guard index + count <= bytes.count else { throw error("unexpected end of input") }
            for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] {
                throw error("expected '\(word)'")
            }
            index += count
        }

        private mutating func readObject(depth: Int) throws(ReadError) -> JSONValue {
            guard depth <= JSONCodec.maxDepth else { throw error("nested deeper than \(JSONCodec.maxDepth) levels") }
            index += 1
            var members: [String: JSONValue] = [:]
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                    throw error(index < bytes.count ? "expected a string as object key" : "unexpected end of input")
                }
                let key = try readString()
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else {
                    throw error("expected ':' after object key")
                }
                index += 1
                skipWhitespace()
                members[key] = try readValue(depth: depth)
                skipWhitespace()
                guard index < bytes.count else { throw error("unexpected end of input") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                } else if bytes[index] == UInt8(ascii: "}") {
                    index += 1
                    return .object(members)
                } else {
                    throw error("expected ',' or '}' in object")
                }
            }
        }

        private mutating func readArray(depth: Int) throws(ReadError) -> JSONValue {
            guard depth <= JSONCodec.maxDepth else { throw error("nested deeper than \(JSONCodec.maxDepth) levels") }
            index += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(items)
            }
            while true {
                skipWhitespace()
                items.append(try readValue(depth: depth))
                skipWhitespace()
                guard index < bytes.count else { throw error("unexpected end of input") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                } else if bytes[index] == UInt8(ascii: "]") {
                    index += 1
                    return .array(items)
                } else {
                    throw error("expected ',' or ']' in array")
                }
            }
        }

        private mutating func readString() throws(ReadError) -> String {
            index += 1  // opening quote
            let start = index
            // Fast path: no escapes, so the bytes between the quotes are the string.
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    let slice = UnsafeBufferPointer(rebasing: bytes[start..<index])
                    guard let text = String(validating: slice, as: UTF8.self) else {
                        throw ReadError(offset: start, reason: "string is not valid UTF-8")
                    }
                    index += 1
                    return text
                }
                if byte == UInt8(ascii: "\\") { break }
                if byte < 0x20 { throw error("control character in string; escape it") }
                index += 1
            }
            guard index < bytes.count else { throw error("unterminated string") }
            var scratch = Array(UnsafeBufferPointer(rebasing: bytes[start..<index]))
            while index < bytes.count {
                let byte = bytes[index]
                switch byte {
                case UInt8(ascii: "\""):
                    guard let text = String(validating: scratch, as: UTF8.self) else {
                        throw ReadError(offset: start, reason: "string is not valid UTF-8")
                    }
                    index += 1
                    return text
                case UInt8(ascii: "\\"):
                    index += 1
                    guard index < bytes.count else { throw error("unterminated string") }
                    let escaped = bytes[index]
                    index += 1
                    switch escaped {
                    case UInt8(ascii: "\""): scratch.append(UInt8(ascii: "\""))
                    case UInt8(ascii: "\\"): scratch.append(UInt8(ascii: "\\"))
                    case UInt8(ascii: "/"): scratch.append(UInt8(ascii: "/"))
                    case UInt8(ascii: "b"): scratch.append(0x08)
                    case UInt8(ascii: "f"): scratch.append(0x0C)
                    case UInt8(ascii: "n"): scratch.append(0x0A)
                    case UInt8(ascii: "r"): scratch.append(0x0D)
                    case UInt8(ascii: "t"): scratch.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try readHex4()
                        if (0xD800...0xDBFF).contains(scalar) {
                            guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"),
                                bytes[index + 1] == UInt8(ascii: "u")
                            else { throw error("lone UTF-16 surrogate in \\u escape") }
                            index += 2
                            let low = try readHex4()
                            guard (0xDC00...0xDFFF).contains(low) else {
                                throw error("lone UTF-16 surrogate in \\u escape")
                            }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00...0xDFFF).contains(scalar) {
                            throw error("lone UTF-16 surrogate in \\u escape")
                        }
                        guard let unicode = Unicode.Scalar(scalar) else { throw error("invalid \\u escape") }
                        scratch.append(contentsOf: String(Character(unicode)).utf8)
                    default:
                        index -= 1
                        throw error("invalid escape '\\\(printable(escaped))'")
                    }
                default:
                    if byte < 0x20 { throw error("control character in string; escape it") }
                    scratch.append(byte)
                    index += 1
                }
            }
            throw error("unterminated string")
        }

        private mutating func readHex4() throws(ReadError) -> UInt32 {
            guard index + 4 <= bytes.count else { throw error("unexpected end of input in \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[index]
                let digit: UInt32
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
                default: throw error("invalid hex digit in \\u escape")
                }
                value = value << 4 | digit
                index += 1
            }
            return value
        }

        private mutating func readNumber() throws(ReadError) -> JSONValue {
            let start = index
            var isInteger = true
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else { throw error("expected a digit") }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
                if index < bytes.count, isDigit(bytes[index]) { throw error("numbers may not have leading zeros") }
            } else {
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                isInteger = false
                index += 1
                guard index < bytes.count, isDigit(bytes[index]) else { throw error("expected a digit after '.'") }
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                isInteger = false
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                    index += 1
                }
                guard index < bytes.count, isDigit(bytes[index]) else { throw error("expected a digit in exponent") }
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            if isInteger, let integer = Int64(text) { return .int(integer) }
            guard let double = Double(text), double.isFinite else {
                throw ReadError(offset: start, reason: "number \(text.prefix(40)) is out of range")
            }
            return .double(double)
        }

        @inline(__always) private func isDigit(_ byte: UInt8) -> Bool {
            byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
        }
    }
}
