import CurlHTTP
import Foundation

/// A request as a sandbox sent it to its proxy: the request line and headers.
struct ProxyRequestHead: Sendable {
    enum BodyFraming: Sendable, Equatable {
        case none
        case length(Int64)
        case chunked
    }

    var method: String
    /// As sent: absolute-form (`http://host/path`), authority-form (`host:443`, CONNECT) or
    /// origin-form (`/path`).
    var target: String
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    var minorVersion: Int
    var headers: HTTPHeaders
    var framing: BodyFraming

    /// Whether the client wants the connection kept after this exchange.
    var keepAlive: Bool {
        let tokens = headers.fields.filter { $0.name.lowercased() == "connection" }
            .flatMap { $0.value.lowercased().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        if minorVersion == 0 { return tokens.contains("keep-alive") }
        return !tokens.contains("close")
    }

    /// `Expect: 100-continue`.
    var expectsContinue: Bool { headers["expect"]?.lowercased() == "100-continue" }

    /// Parses the bytes before the blank line (without it). Throws `HTTPFailure` with a 400
    /// (or 501) on anything malformed.
    init(parsing bytes: UnsafeRawBufferPointer) throws {
        // Split as bytes: in a Swift String, "\r\n" is one character.
        var lines: [Substring] = []
        for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            let trimmed = line.last == UInt8(ascii: "\r") ? line.dropLast() : line
            lines.append(Substring(String(decoding: trimmed, as: UTF8.self)))
        }
        guard let requestLine = lines.first, !requestLine.isEmpty else {
            throw HTTPFailure(400, "the request line is empty")
        }
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw HTTPFailure(400, "the request line is not METHOD TARGET VERSION") }
        guard !parts[0].isEmpty, parts[0].utf8.allSatisfy(Self.isTokenByte) else {
            throw HTTPFailure(400, "the method is not a token")
        }
        guard !parts[1].isEmpty, parts[1].utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw HTTPFailure(400, "the request target holds spaces or control characters")
        }
        switch parts[2] {
        case "HTTP/1.1": minorVersion = 1
        case "HTTP/1.0": minorVersion = 0
        default: throw HTTPFailure(505, "only HTTP/1.0 and HTTP/1.1 are spoken here")
        }
        method = String(parts[0])
        target = String(parts[1])
        var headers = HTTPHeaders()
        for line in lines.dropFirst() {
            if line.isEmpty { continue }
            guard let first = line.utf8.first, first != UInt8(ascii: " "), first != UInt8(ascii: "\t") else {
                throw HTTPFailure(400, "folded header lines are not accepted")
            }
            guard let colon = line.firstIndex(of: ":") else { throw HTTPFailure(400, "a header line has no ':'") }
            let name = line[..<colon]
            guard !name.isEmpty, name.utf8.allSatisfy(Self.isTokenByte) else {
                throw HTTPFailure(400, "a header name is not a token")
            }
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            guard value.utf8.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7f) }) else {
                throw HTTPFailure(400, "a header value holds control characters")
            }
            headers.add(String(name), value)
        }
        self.headers = headers

        let lengths = headers.fields.filter { $0.name.lowercased() == "content-length" }.map(\.value)
        let encodings = headers.fields.filter { $0.name.lowercased() == "transfer-encoding" }.map {
            $0.value.lowercased()
        }
        if !encodings.isEmpty {
            guard lengths.isEmpty else { throw HTTPFailure(400, "both Content-Length and Transfer-Encoding are set") }
            guard encodings == ["chunked"] else {
                throw HTTPFailure(501, "only the chunked transfer coding is accepted")
            }
            framing = .chunked
        } else if let length = lengths.first {
            guard lengths.allSatisfy({ $0 == length }), !length.isEmpty, length.utf8.count <= 18,
                length.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                let value = Int64(length)
            else {
                throw HTTPFailure(400, "Content-Length is not one number")
            }
            framing = value == 0 ? .none : .length(value)
        } else {
            framing = .none
        }
    }

    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
        }
    }
}

/// A request the gateway answers itself with an error status and a one-line reason.
struct HTTPFailure: Error, Sendable {
    var status: Int
    var message: String

    init(_ status: Int, _ message: String) {
        self.status = status
        self.message = message
    }
}

/// Reason phrases for the statuses the gateway writes itself.
func reasonPhrase(_ status: Int) -> String {
    switch status {
    case 100: "Continue"
    case 200: "OK"
    case 400: "Bad Request"
    case 403: "Forbidden"
    case 404: "Not Found"
    case 405: "Method Not Allowed"
    case 408: "Request Timeout"
    case 413: "Content Too Large"
    case 415: "Unsupported Media Type"
    case 431: "Request Header Fields Too Large"
    case 500: "Internal Server Error"
    case 501: "Not Implemented"
    case 502: "Bad Gateway"
    case 503: "Service Unavailable"
    case 504: "Gateway Timeout"
    case 505: "HTTP Version Not Supported"
    default: "Status \(status)"
    }
}
