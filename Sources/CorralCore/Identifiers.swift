/// An identifier that is safe to use as a file name, a container name and a URL path segment.
///
/// Every id in corral is lower-case letters, digits, `-` and `_`, starting with a letter or
/// digit, at most 64 characters. That excludes `/`, `.`, and everything else a path or a
/// shell could give meaning to, so an id can be joined to a directory without further checks.
public protocol CorralIdentifier: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible,
    LosslessStringConvertible, Comparable
where RawValue == String {
    /// What the id names, for error messages ("sandbox id").
    static var kind: String { get }
    /// Prefix of generated ids ("sb").
    static var prefix: String { get }
    init(unchecked rawValue: String)
}

extension CorralIdentifier {
    public static var maxLength: Int { 64 }

    public init(rawValue: String) {
        self.init(unchecked: rawValue)
    }

    /// Checks `text` and returns the id, or an error that says what is wrong with it.
    public init(validating text: String) throws {
        guard let problem = Self.problem(with: text) else {
            self.init(unchecked: text)
            return
        }
        throw CorralError(
            .invalidArgument, "invalid \(Self.kind) '\(text.prefix(80))': \(problem)",
            hint: "ids are 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit")
    }

    public init?(_ description: String) {
        guard Self.problem(with: description) == nil else { return nil }
        self.init(unchecked: description)
    }

    /// A new random id: the prefix, a dash, then 12 base-36 characters (62 bits).
    public static func random() -> Self {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }

    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> Self {
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz")
        var text = prefix + "-"
        for _ in 0..<12 { text.append(alphabet[Int(generator.next(upperBound: UInt64(alphabet.count)))]) }
        return Self(unchecked: text)
    }

    public var description: String { rawValue }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        try self.init(validating: text)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    static func problem(with text: String) -> String? {
        if text.isEmpty { return "it is empty" }
        if text.utf8.count > maxLength { return "it is longer than \(maxLength) characters" }
        for (index, byte) in text.utf8.enumerated() {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                continue
            case UInt8(ascii: "-"), UInt8(ascii: "_"):
                if index == 0 { return "it must start with a letter or digit" }
            default:
                return "character \(index + 1) is not allowed"
            }
        }
        return nil
    }
}

public struct SandboxID: CorralIdentifier {
    public static let kind = "sandbox id"
    public static let prefix = "sb"
    public let rawValue: String
    public init(unchecked rawValue: String) { self.rawValue = rawValue }
}

public struct SessionID: CorralIdentifier {
    public static let kind = "session id"
    public static let prefix = "se"
    public let rawValue: String
    public init(unchecked rawValue: String) { self.rawValue = rawValue }
}

public struct TenantID: CorralIdentifier {
    public static let kind = "tenant id"
    public static let prefix = "tn"
    public let rawValue: String
    public init(unchecked rawValue: String) { self.rawValue = rawValue }

    /// The tenant that owns everything made without a service (the command line on its own).
    public static let local = TenantID(unchecked: "local")
}

/// A command started in a sandbox over its control connection: it names the command for as
/// long as corral-init keeps it (to attach to it, list it, signal it), whichever process asks.
public struct CommandID: CorralIdentifier {
    public static let kind = "command id"
    public static let prefix = "cm"
    public let rawValue: String
    public init(unchecked rawValue: String) { self.rawValue = rawValue }
}
