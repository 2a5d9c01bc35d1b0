import CorralCore

/// Where an HTTP server listens: a unix socket, or a host and port with optional TLS.
public enum HTTPEndpoint: Sendable, Hashable, CustomStringConvertible {
    case unixSocket(path: String)
    /// `basePath` is prefixed to every request path (for APIs mounted under a prefix).
    case tcp(host: String, port: Int, tls: TLSConfiguration?, basePath: String = "")

    /// Parses `unix:///run/x.sock`, a bare `/run/x.sock`, `tcp://host:port` (TLS when `tls` is
    /// given, as docker does), `http://host[:port][/base]` and `https://host[:port][/base]`.
    public init(parsing text: String, tls: TLSConfiguration? = nil) throws {
        func invalid(_ why: String) -> CorralError {
            CorralError.invalidArgument(
                "invalid endpoint '\(text)': \(why)",
                hint: "use unix:///path/to.sock, tcp://host:port, http://host:port or https://host")
        }
        if text.hasPrefix("/") {
            self = .unixSocket(path: text)
            return
        }
        guard let schemeEnd = text.range(of: "://") else { throw invalid("it has no scheme") }
        let scheme = text[..<schemeEnd.lowerBound].lowercased()
        let rest = String(text[schemeEnd.upperBound...])
        switch scheme {
        case "unix":
            guard rest.hasPrefix("/") else { throw invalid("a unix socket path must be absolute") }
            self = .unixSocket(path: rest)
            return
        case "tcp", "http", "https":
            break
        default:
            throw invalid("unknown scheme '\(scheme)'")
        }
        let authority: Substring
        var basePath = ""
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            basePath = String(rest[slash...])
            while basePath.hasSuffix("/") { basePath.removeLast() }
        } else {
            authority = Substring(rest)
        }
        var host: String
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw invalid("unclosed '[' in host") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                portText = after.dropFirst()
            } else if !after.isEmpty {
                throw invalid("junk after host")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        } else {
            host = String(authority)
        }
        guard !host.isEmpty else { throw invalid("it has no host") }
        let useTLS: TLSConfiguration?
        switch scheme {
        case "https": useTLS = tls ?? TLSConfiguration()
        case "http": useTLS = nil
        default: useTLS = tls
        }
        let port: Int
        if let portText {
            guard let parsed = Int(portText), (1...65535).contains(parsed) else {
                throw invalid("bad port '\(portText)'")
            }
            port = parsed
        } else if scheme == "tcp" {
            throw invalid("tcp endpoints need a port")
        } else {
            port = useTLS == nil ? 80 : 443
        }
        if host.contains(":") { host = "[\(host)]" }
        self = .tcp(host: host, port: port, tls: useTLS, basePath: basePath)
    }

    public var description: String {
        switch self {
        case .unixSocket(let path): "unix://\(path)"
        case .tcp(let host, let port, let tls, let basePath):
            "\(tls == nil ? "http" : "https")://\(host):\(port)\(basePath)"
        }
    }

    /// The URL curl is given for `path`; unix sockets use a placeholder host.
    func url(for path: String) -> String {
        switch self {
        case .unixSocket: "http://localhost\(path)"
        case .tcp(let host, let port, let tls, let basePath):
            "\(tls == nil ? "http" : "https")://\(host):\(port)\(basePath)\(path)"
        }
    }

    /// True for a unix socket or a loopback host: places where plain HTTP is acceptable.
    public var isLocal: Bool {
        switch self {
        case .unixSocket: true
        case .tcp(let host, _, _, _): host == "localhost" || host.hasPrefix("127.") || host == "[::1]"
        }
    }
}

/// Files for TLS: the CA that signs the server, and a client certificate and key when the
/// server demands one (docker's `--tlsverify`). Paths, never key material in memory.
public struct TLSConfiguration: Sendable, Hashable {
    public var caFile: String?
    public var certificateFile: String?
    public var keyFile: String?

    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }
}
