import CorralCore

/// An Engine API version such as 1.41, ordered numerically (1.9 < 1.41).
public struct APIVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(_ major: Int, _ minor: Int) {
        self.major = major
        self.minor = minor
    }

    public init?(_ text: String) {
        let parts = text.split(separator: ".")
        guard parts.count == 2, let major = Int(parts[0]), let minor = Int(parts[1]) else { return nil }
        self.init(major, minor)
    }

    public static func < (lhs: APIVersion, rhs: APIVersion) -> Bool {
        (lhs.major, lhs.minor) < (rhs.major, rhs.minor)
    }

    public var description: String { "\(major).\(minor)" }

    /// The oldest API corral speaks: Docker 20.10, what Debian 12 ships.
    public static let oldestSupported = APIVersion(1, 41)
    /// The newest API corral has been written against; newer engines are asked for this one.
    public static let newestSupported = APIVersion(1, 47)

    /// The version to use with an engine that speaks `minimum...maximum`.
    static func negotiate(engineMinimum: APIVersion?, engineMaximum: APIVersion, endpoint: String) throws -> APIVersion
    {
        if engineMaximum < oldestSupported {
            throw CorralError(
                .unsupported,
                "the engine at \(endpoint) speaks API \(engineMaximum) at most; corral needs \(oldestSupported) or newer",
                hint: "upgrade the engine to Docker 20.10 or newer")
        }
        let chosen = min(engineMaximum, newestSupported)
        if let engineMinimum, chosen < engineMinimum {
            throw CorralError(
                .unsupported,
                "the engine at \(endpoint) refuses API versions below \(engineMinimum); corral speaks \(oldestSupported) to \(newestSupported)",
                hint: "use an engine that still accepts API \(newestSupported), or upgrade corral")
        }
        return chosen
    }
}
