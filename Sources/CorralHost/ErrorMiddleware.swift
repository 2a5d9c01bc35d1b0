import CorralAPI
import CorralCore
import CorralSession
import Foundation
import Hummingbird
import Logging

/// Turns every error into `{"code", "message", "hint"}` with a fitting status. A client's
/// mistake is a 4xx; nothing leaks a stack trace or an internal type name.
package struct ErrorMiddleware: RouterMiddleware {
    package typealias Context = CorralRequestContext
    package let metrics: ServerMetrics
    /// Host paths that must not reach a client (the state directory): replaced by a name.
    package let redactions: [(path: String, name: String)]

    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch {
            var (status, body) = Self.describe(error)
            for (path, name) in redactions where !path.isEmpty {
                body.message = body.message.replacingOccurrences(of: path, with: name)
                body.hint = body.hint?.replacingOccurrences(of: path, with: name)
            }
            metrics.error(code: body.code)
            if status >= 500 {
                context.logger.warning(
                    "request failed", metadata: ["path": "\(request.uri.path)", "error": "\(body.message)"])
            }
            var response = JSONResponse.make(body, status: status)
            if let seconds = CorralError(converting: error)?.retryAfterSeconds {
                response.headers[.retryAfter] = String(max(1, seconds))
            }
            return response
        }
    }

    package static func describe(_ error: any Error) -> (Int, APIErrorBody) {
        switch error {
        case let error as CorralError:
            return (APIErrorBody.status(for: error.code), APIErrorBody(error))
        case let error as any CorralErrorConvertible:
            let converted = error.corralError
            return (APIErrorBody.status(for: converted.code), APIErrorBody(converted))
        case let error as any HTTPResponseError:
            let status = Int(error.status.code)
            let code: CorralError.Code =
                switch status {
                case 404: .notFound
                case 405: .invalidArgument
                case 413: .payloadTooLarge
                case 400..<500: .invalidArgument
                default: .internalError
                }
            var message = "\(error.status.reasonPhrase.lowercased())"
            if let described = (error as? HTTPError)?.body, !described.isEmpty { message = described }
            if status == 404 { message = "no such route" }
            if status == 413 { message = "the request body is larger than this route accepts" }
            return (status, APIErrorBody(code: code.rawValue, message: message))
        case is DecodingError:
            return (
                400, APIErrorBody(code: CorralError.Code.invalidArgument.rawValue, message: describe(decoding: error))
            )
        case is CancellationError:
            return (499, APIErrorBody(code: CorralError.Code.cancelled.rawValue, message: "the request was cancelled"))
        default:
            return (500, APIErrorBody(code: CorralError.Code.internalError.rawValue, message: "internal error"))
        }
    }

    package static func describe(decoding error: any Error) -> String {
        guard let error = error as? DecodingError else { return "malformed JSON" }
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            return keys.isEmpty ? "the body" : "'\(keys.joined(separator: "."))'"
        }
        switch error {
        case .typeMismatch(let type, let context): return "\(path(context)) should be \(typeName(type))"
        case .valueNotFound(let type, let context): return "\(path(context)) should be \(typeName(type)), not null"
        case .keyNotFound(let key, _): return "'\(key.stringValue)' is required"
        case .dataCorrupted(let context):
            if let underlying = context.underlyingError as? CorralError { return underlying.message }
            return context.codingPath.isEmpty
                ? "the body is not valid JSON" : "\(path(context)) is invalid: \(context.debugDescription)"
        @unknown default: return "malformed JSON"
        }
    }

    package static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is Int64.Type, is Double.Type: "a number"
        case is Bool.Type: "true or false"
        default:
            // Decoding reports what it expected as Dictionary<String, Any> or Array<Any>.
            String(describing: type).hasPrefix("Array") ? "an array" : "an object"
        }
    }
}

/// JSON responses with corral's encoder settings (ISO 8601 dates, sorted keys).
package enum JSONResponse {
    package static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        // Microseconds, as the session store keeps them: whole seconds would lose the order of
        // events appended within one second.
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(Timestamp.rfc3339(date))
        }
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    package static func make(_ value: some Encodable, status: Int = 200) -> Response {
        let data =
            (try? encoder.encode(value)) ?? Data(#"{"code":"internal","message":"could not encode the answer"}"#.utf8)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(
            status: HTTPResponse.Status(code: status), headers: headers,
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    package static func empty(status: Int = 204) -> Response {
        Response(status: HTTPResponse.Status(code: status))
    }
}
