import CorralCore

/// A duration on the wire: `"30m"`, `"1h30m"`, or a number of seconds.
public struct DurationValue: Codable, Sendable, Hashable {
    public var duration: Duration

    public init(_ duration: Duration) { self.duration = duration }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let seconds = try? container.decode(Double.self) {
            guard seconds.isFinite, seconds >= 0, seconds * 1000 < Double(Int64.max) / 2 else {
                throw CorralError.invalidArgument(
                    "a duration must be a non-negative number of seconds below 4e12, got \(seconds)")
            }
            duration = .milliseconds(Int64((seconds * 1000).rounded()))
        } else {
            duration = try Duration(parsing: try container.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(duration.compactDescription)
    }
}
