/// A size in bytes, parsed the way the docker CLI parses `--memory`: `512m`, `1g`, `64k`,
/// with an optional `b`/`ib` suffix; every unit is binary (1k = 1024).
public struct ByteSize: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    public var bytes: Int64

    public init(bytes: Int64) { self.bytes = bytes }

    public static func kibibytes(_ n: Int64) -> ByteSize { ByteSize(bytes: n * 1024) }
    public static func mebibytes(_ n: Int64) -> ByteSize { ByteSize(bytes: n * 1024 * 1024) }
    public static func gibibytes(_ n: Int64) -> ByteSize { ByteSize(bytes: n * 1024 * 1024 * 1024) }
    public static func tebibytes(_ n: Int64) -> ByteSize { ByteSize(bytes: n << 40) }

    public init(parsing text: String) throws {
        let lowered = text.trimmingSpaces.lowercased()
        var number = Substring(lowered)
        var unit = Substring("")
        if let firstLetter = lowered.firstIndex(where: { $0.isLetter }) {
            number = lowered[..<firstLetter]
            unit = lowered[firstLetter...]
        }
        let multiplier: Double
        switch unit {
        case "", "b": multiplier = 1
        case "k", "kb", "kib": multiplier = 1024
        case "m", "mb", "mib": multiplier = 1024 * 1024
        case "g", "gb", "gib": multiplier = 1024 * 1024 * 1024
        case "t", "tb", "tib": multiplier = 1024 * 1024 * 1024 * 1024
        default:
            throw CorralError.invalidArgument(
                "invalid size '\(text)': unknown unit '\(unit)'",
                hint: "use a number with k, m, g or t, such as 512m or 1g")
        }
        guard let value = Double(number), value.isFinite, value >= 0 else {
            throw CorralError.invalidArgument(
                "invalid size '\(text)': '\(number)' is not a non-negative number",
                hint: "use a size such as 512m or 1g")
        }
        let total = value * multiplier
        guard total < Double(Int64.max) else {
            throw CorralError.invalidArgument("invalid size '\(text)': too large")
        }
        self.bytes = Int64(total.rounded())
    }

    public static func < (lhs: ByteSize, rhs: ByteSize) -> Bool { lhs.bytes < rhs.bytes }

    /// The shortest exact spelling: `1g`, `512m`, `1536k`, `100b`.
    public var description: String {
        for (suffix, size) in [
            ("t", Int64(1) << 40), ("g", Int64(1) << 30), ("m", Int64(1) << 20), ("k", Int64(1) << 10),
        ]
        where bytes >= size && bytes % size == 0 {
            return "\(bytes / size)\(suffix)"
        }
        return "\(bytes)b"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let n = try? container.decode(Int64.self) {
            self.init(bytes: n)
        } else {
            try self.init(parsing: container.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(bytes)
    }
}

extension String {
    var trimmingSpaces: String {
        var view = Substring(self)
        while view.first?.isWhitespace == true { view.removeFirst() }
        while view.last?.isWhitespace == true { view.removeLast() }
        return String(view)
    }
}
