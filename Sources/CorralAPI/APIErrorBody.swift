import CorralCore

/// Every error the API returns: `{"code", "message", "hint"}`.
public struct APIErrorBody: Codable, Sendable, Hashable {
    public var code: String
    public var message: String
    public var hint: String?

    public init(code: String, message: String, hint: String? = nil) {
        self.code = code
        self.message = message
        self.hint = hint
    }

    public init(_ error: CorralError) {
        self.init(code: error.code.rawValue, message: error.description, hint: error.hint)
    }

    public var corralError: CorralError {
        CorralError(CorralError.Code(rawValue: code), message, hint: hint)
    }

    /// The HTTP status for an error code. A client's mistake is always a 4xx.
    public static func status(for code: CorralError.Code) -> Int {
        switch code {
        case .invalidArgument: 400
        case .unauthenticated: 401
        case .payloadTooLarge: 413
        case .requestTimeout: 408
        case .headersTooLarge: 431
        case .quotaExceeded: 429
        case .permissionDenied: 403
        case .notFound: 404
        case .alreadyExists, .conflict: 409
        case .resourceExhausted: 429
        case .insufficientStorage: 507
        case .unsupported: 501
        case .engine: 502
        case .unavailable: 503
        case .timeout: 504
        case .cancelled: 499
        default: 500
        }
    }
}

extension CorralError.Code {
    /// A request body larger than the service accepts.
    public static let payloadTooLarge = CorralError.Code(rawValue: "payload_too_large")
    /// A missing or unknown bearer token.
    public static let unauthenticated = CorralError.Code(rawValue: "unauthenticated")
    /// The request head did not arrive within the service's header timeout (408).
    public static let requestTimeout = CorralError.Code(rawValue: "request_timeout")
    /// The request head (request line and header fields) is larger than the service takes (431).
    public static let headersTooLarge = CorralError.Code(rawValue: "headers_too_large")
    /// A tenant's quota of sandboxes or sessions is used up.
    public static let quotaExceeded = CorralError.Code(rawValue: "quota_exceeded")
    /// The sandbox's disk or tmpfs is full (ENOSPC, EDQUOT) for a file written into it (507).
    public static let insufficientStorage = CorralError.Code(rawValue: "insufficient_storage")
}
