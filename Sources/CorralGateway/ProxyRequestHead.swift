import CurlHTTP
import NIOCore
import NIOHTTP1

/// A request as a sandbox sent it to its proxy: the request line and headers, as NIOHTTP1's
/// decoder read them, with the checks the gateway adds on top.
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
    var headers: CurlHTTP.HTTPHeaders
    var framing: BodyFraming
    /// Whether the client wants the connection kept after this exchange. False for a request
    /// that asks for an upgrade: the decoder reads nothing after one.
    var keepAlive: Bool

    /// `Expect: 100-continue`.
    var expectsContinue: Bool { headers["expect"]?.lowercased() == "100-continue" }

    /// Takes a head the decoder accepted (it has checked the request line, tokens, and that
    /// Content-Length and Transfer-Encoding agree) and applies what the gateway wants beyond
    /// that. Throws `HTTPFailure` with a 400, 501 or 505.
    init(_ head: HTTPRequestHead) throws {
        guard head.version.major == 1, head.version.minor <= 1 else {
            throw HTTPFailure(505, "only HTTP/1.0 and HTTP/1.1 are spoken here")
        }
        var headers = CurlHTTP.HTTPHeaders()
        for (name, value) in head.headers {
            guard value.utf8.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7f) }) else {
                throw HTTPFailure(400, "a header value holds control characters")
            }
            headers.add(name, value)
        }
        method = head.method.rawValue
        target = head.uri
        minorVersion = head.version.minor
        self.headers = headers

        let lengths = head.headers["content-length"]
        let encodings = head.headers["transfer-encoding"].map { $0.lowercased() }
        if !encodings.isEmpty {
            guard lengths.isEmpty else { throw HTTPFailure(400, "both Content-Length and Transfer-Encoding are set") }
            guard encodings == ["chunked"] else {
                throw HTTPFailure(501, "only the chunked transfer coding is accepted")
            }
            framing = .chunked
        } else if let length = lengths.first {
            guard lengths.allSatisfy({ $0 == length }), let value = Int64(length), value >= 0 else {
                throw HTTPFailure(400, "Content-Length is not one number")
            }
            framing = value == 0 ? .none : .length(value)
        } else {
            framing = .none
        }
        let upgrade = !head.headers["upgrade"].isEmpty
        keepAlive = head.isKeepAlive && !upgrade
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

    /// What the decoder's errors mean for the client: 431 for a head over the limit, 505 for
    /// an HTTP version other than 1.x, 400 for the rest.
    init(decoding error: any Error, maxHeadBytes: Int) {
        switch error {
        case HTTPParserError.headerOverflow, is ByteToMessageDecoderError.PayloadTooLargeError:
            self.init(431, "the request head is larger than \(maxHeadBytes) bytes")
        case HTTPParserError.invalidVersion:
            self.init(505, "only HTTP/1.0 and HTTP/1.1 are spoken here")
        case let parser as HTTPParserError:
            self.init(400, "the request is not valid HTTP/1.1 (\(parser))")
        default:
            self.init(400, "the request is not valid HTTP/1.1")
        }
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
