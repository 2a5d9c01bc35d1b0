import CorralAPI
import CorralCore
import Foundation
import Hummingbird

/// An error of E2B's control plane, in the shape its SDK reads: `{"code": 404, "message": "..."}`
/// with the same status. The SDK turns 401 into `AuthenticationException`, 404 on a sandbox into
/// `SandboxNotFoundException`, and any other status into `SandboxException("404: message")`.
package struct E2BAPIError: Error, Sendable {
    package var status: Int
    package var message: String

    package static func notFound(_ message: String) -> E2BAPIError { E2BAPIError(status: 404, message: message) }
    package static func badRequest(_ message: String) -> E2BAPIError { E2BAPIError(status: 400, message: message) }

    /// A corral error as E2B's API would have answered it.
    package init(converting error: any Error) {
        if let error = error as? E2BAPIError {
            self = error
            return
        }
        let (status, body) = ErrorMiddleware.describe(error)
        // E2B has no 409 for sandboxes and no 413; a quota is its 429.
        self.init(status: status, message: body.message)
    }

    package init(status: Int, message: String) {
        self.status = status
        self.message = message
    }

    package var response: Response {
        struct Body: Encodable {
            package var code: Int
            package var message: String
        }
        return JSONResponse.make(Body(code: status, message: message), status: status)
    }
}

/// An error of envd's Connect RPCs: a code by name (`not_found`), a message. Unary calls answer
/// it with the code's HTTP status and `{"code", "message"}`; streams end with it in their last
/// frame.
package struct ConnectError: Error, Sendable {
    package var code: String
    package var message: String

    package static func invalidArgument(_ message: String) -> ConnectError {
        ConnectError(code: "invalid_argument", message: message)
    }
    package static func notFound(_ message: String) -> ConnectError {
        ConnectError(code: "not_found", message: message)
    }
    package static func unauthenticated(_ message: String) -> ConnectError {
        ConnectError(code: "unauthenticated", message: message)
    }
    package static func unimplemented(_ message: String) -> ConnectError {
        ConnectError(code: "unimplemented", message: message)
    }

    package init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    /// A corral error under the Connect code envd gives the same failure.
    package init(converting error: any Error) {
        if let error = error as? ConnectError {
            self = error
            return
        }
        if let error = error as? E2BAPIError {
            self.init(code: error.status == 401 ? "unauthenticated" : "unavailable", message: error.message)
            return
        }
        let (_, body) = ErrorMiddleware.describe(error)
        let code: String =
            switch CorralError.Code(rawValue: body.code) {
            case .invalidArgument: "invalid_argument"
            case .notFound: "not_found"
            case .alreadyExists: "already_exists"
            case .conflict: "failed_precondition"
            case .permissionDenied: "permission_denied"
            case .resourceExhausted, .quotaExceeded, .payloadTooLarge: "resource_exhausted"
            case .unsupported: "unimplemented"
            case .unauthenticated: "unauthenticated"
            case .timeout: "deadline_exceeded"
            case .cancelled: "canceled"
            case .unavailable, .engine: "unavailable"
            default: "internal"
            }
        self.init(code: code, message: body.message)
    }

    /// Connect's mapping of codes to HTTP statuses, for unary answers.
    package var httpStatus: Int {
        switch code {
        case "canceled": 499
        case "invalid_argument", "failed_precondition", "out_of_range": 400
        case "deadline_exceeded": 504
        case "not_found": 404
        case "already_exists", "aborted": 409
        case "permission_denied": 403
        case "resource_exhausted": 429
        case "unimplemented": 501
        case "unavailable": 503
        case "unauthenticated": 401
        default: 500
        }
    }

    package var json: [String: Any] { ["code": code, "message": message] }
}
