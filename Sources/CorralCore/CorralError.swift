/// The error every corral module throws for conditions a user can meet.
///
/// `message` is one line that says what went wrong; `hint` says what to do about it.
/// Neither may ever hold a credential: callers redact before they build one.
public struct CorralError: Error, Sendable, CustomStringConvertible, Equatable {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The caller passed something malformed: a bad id, size, duration, path or JSON.
        public static let invalidArgument = Code(rawValue: "invalid_argument")
        public static let notFound = Code(rawValue: "not_found")
        public static let alreadyExists = Code(rawValue: "already_exists")
        /// A precondition on current state failed: an expected sequence number, a stale lease.
        public static let conflict = Code(rawValue: "conflict")
        /// Something corral depends on (the engine, a service) cannot be reached.
        public static let unavailable = Code(rawValue: "unavailable")
        /// The engine answered with an error of its own.
        public static let engine = Code(rawValue: "engine")
        public static let timeout = Code(rawValue: "timeout")
        public static let cancelled = Code(rawValue: "cancelled")
        /// A file system operation failed (including a full disk).
        public static let io = Code(rawValue: "io")
        /// Stored data fails its checks; corral refuses to guess.
        public static let corrupted = Code(rawValue: "corrupted")
        public static let permissionDenied = Code(rawValue: "permission_denied")
        /// A limit was reached: output size, quota, pids, memory.
        public static let resourceExhausted = Code(rawValue: "resource_exhausted")
        public static let unsupported = Code(rawValue: "unsupported")
        public static let internalError = Code(rawValue: "internal")
    }

    public var code: Code
    public var message: String
    public var hint: String?
    /// The underlying error, rendered once; kept as text so the error stays Sendable and Equatable.
    public var underlying: String?
    /// For a passing condition (a database that is restarting): the seconds after which a
    /// retry may succeed. The HTTP API sends it as `Retry-After`.
    public var retryAfterSeconds: Int?

    public init(_ code: Code, _ message: String, hint: String? = nil, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.hint = hint
        self.underlying = underlying.map { String(describing: $0) }
    }

    public var description: String {
        var text = message
        if let underlying, !message.contains(underlying) { text += ": \(underlying)" }
        return text
    }
}

extension CorralError {
    public static func invalidArgument(_ message: String, hint: String? = nil) -> CorralError {
        CorralError(.invalidArgument, message, hint: hint)
    }

    public static func notFound(_ message: String, hint: String? = nil) -> CorralError {
        CorralError(.notFound, message, hint: hint)
    }
}

/// An error of a lower module that presents itself as a `CorralError` (the engine's refusals,
/// an API's error body). The command line and the HTTP API both convert through this, and
/// `CorralError(converting:)` is how any other caller does.
public protocol CorralErrorConvertible: Error {
    var corralError: CorralError { get }
}

extension CorralError {
    /// `error` itself when it is a `CorralError`, its conversion when it offers one; nil
    /// otherwise.
    public init?(converting error: any Error) {
        switch error {
        case let error as CorralError: self = error
        case let error as any CorralErrorConvertible: self = error.corralError
        default: return nil
        }
    }
}
