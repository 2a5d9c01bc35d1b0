import CorralCore
import CurlHTTP
import Foundation

/// The HTTP exchange every HTTP brain makes: POST a JSON body, read a JSON answer, and turn
/// every way that can fail into a `BrainError` without the key in it.
struct BrainHTTP: Sendable {
    let client: CurlHTTPClient
    let timeout: Duration
    let secret: String?

    func postJSON(_ path: String, headers: HTTPHeaders, body: [UInt8]) async throws -> JSONValue {
        var headers = headers
        headers.set("Content-Type", "application/json")
        headers.set("Accept", "application/json")
        // No "Expect: 100-continue" round trip before the body: the body is the request.
        headers.set("Expect", "")
        let request = HTTPRequest(.post, path, headers: headers, body: .bytes(body), timeout: timeout)
        let response: HTTPResponse
        do {
            response = try await client.execute(request)
        } catch let error as CorralError {
            switch error.code {
            case .cancelled: throw CancellationError()
            case .timeout:
                throw BrainError(.timeout, "no answer from \(client.endpoint) within \(timeout.compactDescription)")
            default:
                throw BrainError(
                    .unavailable,
                    Redaction.oneLine(Redaction.redact("\(client.endpoint): \(error.description)", secret: secret)))
            }
        }
        let status = response.status
        let parsed = try? JSONCodec.decode(response.body)
        guard (200..<300).contains(status) else {
            throw classify(status: status, body: parsed, raw: response.body, headers: response.head.headers)
        }
        guard let parsed, case .object = parsed else {
            let snippet = Redaction.oneLine(
                Redaction.redact(String(decoding: response.body.prefix(200), as: UTF8.self), secret: secret), limit: 200
            )
            throw BrainError(
                .malformed, status: status,
                "the answer is not a JSON object: \(snippet.isEmpty ? "(empty body)" : snippet)")
        }
        return parsed
    }

    /// Maps an error status and its body to a `BrainError`, keeping the provider's message.
    func classify(status: Int, body: JSONValue?, raw: [UInt8], headers: HTTPHeaders) -> BrainError {
        // Anthropic: {"type":"error","error":{"type":"overloaded_error","message":"…"}};
        // OpenAI: {"error":{"message":"…","type":"…","code":"…"}}.
        let errorObject = body?["error"]
        let providerType = errorObject?["type"]?.stringValue ?? errorObject?["code"]?.stringValue
        var message = errorObject?["message"]?.stringValue ?? errorObject?.stringValue
        if message == nil {
            let text = String(decoding: raw.prefix(300), as: UTF8.self)
            message = text.isEmpty ? "HTTP \(status) with an empty body" : text
        }
        let text = Redaction.oneLine(Redaction.redact(message ?? "", secret: secret))
        let detail = providerType.map { "\($0): \(text)" } ?? text
        let retryAfter = Self.retryAfter(headers)
        let kind: BrainError.Kind
        switch status {
        case 401, 403: kind = .authentication
        case 429: kind = .rateLimited
        case 529: kind = .overloaded
        case 500...599: kind = providerType == "overloaded_error" ? .overloaded : .server
        case 408: kind = .timeout
        default: kind = .invalidRequest
        }
        return BrainError(kind, status: status, detail, retryAfter: retryAfter)
    }

    /// `retry-after-ms` (milliseconds), else `retry-after` as seconds or an HTTP date.
    static func retryAfter(_ headers: HTTPHeaders, now: Date = Date()) -> Duration? {
        if let text = headers["retry-after-ms"], let milliseconds = Double(text.trimmingCharacters(in: .whitespaces)),
            milliseconds >= 0, milliseconds.isFinite
        {
            return .milliseconds(Int64(milliseconds))
        }
        guard let text = headers["retry-after"]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
        if let seconds = Double(text), seconds >= 0, seconds.isFinite {
            return .milliseconds(Int64(seconds * 1000))
        }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        if let date = formatter.date(from: text) {
            return .milliseconds(Int64(max(0, date.timeIntervalSince(now)) * 1000))
        }
        return nil
    }
}

extension JSONValue {
    /// The value as an Int, when it is a whole number.
    var intOrNil: Int? { intValue.map { Int($0) } }
}
