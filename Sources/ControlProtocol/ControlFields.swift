/// Writes a payload of length-prefixed fields: each field is a 4-byte big-endian length and
/// that many bytes. Numbers are 8-byte big-endian fields, flags 1-byte ones, lists a count
/// field and then their elements. A reader that finds a field of the wrong size, or runs out,
/// gives up: a payload is taken whole or not at all.
public struct ControlFieldWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func append<Bytes: Collection<UInt8>>(raw: Bytes) {
        let count = UInt32(truncatingIfNeeded: raw.count)
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: count >> shift)) }
        bytes.append(contentsOf: raw)
    }

    public mutating func append(_ text: String) { append(raw: Array(text.utf8)) }

    public mutating func append(_ value: UInt64) {
        var raw: [UInt8] = []
        raw.reserveCapacity(8)
        for shift in stride(from: 56, through: 0, by: -8) { raw.append(UInt8(truncatingIfNeeded: value >> shift)) }
        append(raw: raw)
    }

    public mutating func append(_ value: Int64) { append(UInt64(bitPattern: value)) }

    public mutating func append(_ value: Int) { append(Int64(value)) }

    public mutating func append(_ flag: Bool) { append(raw: [flag ? 1 : 0]) }

    public mutating func append(_ list: [String]) {
        append(UInt64(list.count))
        for element in list { append(element) }
    }
}

/// Reads what a `ControlFieldWriter` wrote. Every accessor returns nil when the next field is
/// missing or of the wrong shape.
public struct ControlFieldReader {
    private let bytes: [UInt8]
    private var position = 0

    public init<Bytes: Collection<UInt8>>(_ payload: Bytes) {
        bytes = Array(payload)
    }

    public var isAtEnd: Bool { position >= bytes.count }

    public mutating func raw() -> ArraySlice<UInt8>? {
        guard bytes.count - position >= 4 else { return nil }
        var count = 0
        for index in position..<(position + 4) { count = count << 8 | Int(bytes[index]) }
        guard bytes.count - position - 4 >= count else { return nil }
        defer { position += 4 + count }
        return bytes[(position + 4)..<(position + 4 + count)]
    }

    public mutating func string() -> String? {
        raw().map { String(decoding: $0, as: UTF8.self) }
    }

    public mutating func uint64() -> UInt64? {
        guard let field = raw(), field.count == 8 else { return nil }
        return field.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    public mutating func int64() -> Int64? { uint64().map { Int64(bitPattern: $0) } }

    public mutating func int() -> Int? { int64().flatMap { Int(exactly: $0) } }

    public mutating func bool() -> Bool? {
        guard let field = raw(), field.count == 1, let value = field.first, value <= 1 else { return nil }
        return value == 1
    }

    /// A list of at most `limit` strings.
    public mutating func strings(limit: Int = 1 << 20) -> [String]? {
        guard let count = uint64(), count <= UInt64(limit) else { return nil }
        var result: [String] = []
        result.reserveCapacity(Int(count))
        for _ in 0..<Int(count) {
            guard let element = string() else { return nil }
            result.append(element)
        }
        return result
    }
}
