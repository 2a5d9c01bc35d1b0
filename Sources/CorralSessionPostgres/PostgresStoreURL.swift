import CorralCore
import Foundation

/// Where the PostgreSQL session store lives: `postgres://USER:PASSWORD@HOST:PORT/DATABASE`,
/// with optional `?sslmode=disable|prefer|require|verify-full`, `?host=/socket/dir` (a unix
/// socket directory, as libpq spells it) and `?schema=NAME` (default `corral`).
///
/// The password is kept out of every rendering: `description` is the URL without it, and that
/// is the only form that may appear in a message or a log.
public struct PostgresStoreURL: Sendable, Hashable, CustomStringConvertible {
    public enum TLSMode: String, Sendable, Hashable {
        case disable, prefer, require
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    /// A unix socket directory (`.s.PGSQL.PORT` inside it); TCP to `host` when nil.
    public var socketDirectory: String?
    public var user: String
    public var password: String?
    public var database: String
    public var tls: TLSMode
    /// The PostgreSQL schema that holds corral's tables.
    public var schema: String

    public init(parsing text: String) throws {
        let scheme: String
        if text.hasPrefix("postgres://") {
            scheme = "postgres://"
        } else if text.hasPrefix("postgresql://") {
            scheme = "postgresql://"
        } else {
            throw CorralError(
                .invalidArgument, "the store URL '\(Self.redact(text).prefix(120))' is not postgres://…",
                hint: "write postgres://USER:PASSWORD@HOST:PORT/DATABASE")
        }
        var rest = Substring(text.dropFirst(scheme.count))
        var query: Substring = ""
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        var path: Substring = ""
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        var userInfo: Substring = ""
        if let at = rest.lastIndex(of: "@") {
            userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
        }
        let redacted = Self.redact(text)
        func bad(_ what: String, _ hint: String) -> CorralError {
            CorralError(.invalidArgument, "the store URL \(redacted) \(what)", hint: hint)
        }
        if let colon = userInfo.firstIndex(of: ":") {
            user = Self.percentDecoded(userInfo[..<colon])
            password = Self.percentDecoded(userInfo[userInfo.index(after: colon)...])
        } else {
            user = Self.percentDecoded(userInfo)
            password = nil
        }
        guard !user.isEmpty else {
            throw bad("names no user", "write postgres://USER:PASSWORD@HOST:PORT/DATABASE")
        }
        var hostPart = rest
        port = 5432
        if let colon = hostPart.lastIndex(of: ":"), !hostPart.hasSuffix("]") {
            guard let value = Int(hostPart[hostPart.index(after: colon)...]), (1...65535).contains(value) else {
                throw bad("has a bad port", "a port is a number from 1 to 65535")
            }
            port = value
            hostPart = hostPart[..<colon]
        }
        if hostPart.hasPrefix("["), hostPart.hasSuffix("]") { hostPart = hostPart.dropFirst().dropLast() }
        host = Self.percentDecoded(hostPart)
        database = Self.percentDecoded(path)
        if database.isEmpty { database = user }
        tls = .prefer
        schema = "corral"
        socketDirectory = nil
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            let key = String(parts[0])
            let value = parts.count > 1 ? Self.percentDecoded(parts[1]) : ""
            switch key {
            case "sslmode":
                guard let mode = TLSMode(rawValue: value) else {
                    throw bad("has sslmode=\(value.prefix(20))", "sslmode is disable, prefer, require or verify-full")
                }
                tls = mode
            case "host":
                guard value.hasPrefix("/") else {
                    throw bad("has host=\(value.prefix(60)), not a socket directory", "write ?host=/path/to/socket/dir")
                }
                socketDirectory = value
            case "schema":
                guard Self.isIdentifier(value) else {
                    throw bad(
                        "has schema=\(value.prefix(70))",
                        "a schema is 1-63 characters of a-z, 0-9 and '_', starting with a letter or '_'")
                }
                schema = value
            case "application_name", "connect_timeout":
                continue
            default:
                throw bad("has an unknown parameter '\(key.prefix(40))'", "known: sslmode, host, schema")
            }
        }
        guard !host.isEmpty || socketDirectory != nil else {
            throw bad("names no host", "write postgres://USER:PASSWORD@HOST:PORT/DATABASE, or ?host=/socket/dir")
        }
        if socketDirectory != nil, tls == .prefer { tls = .disable }
    }

    /// The URL without its password: the only way it is ever shown.
    public var description: String {
        var text = "postgres://\(user)@"
        if socketDirectory == nil { text += host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
        text += "/\(database)"
        var query: [String] = []
        if let socketDirectory { query.append("host=\(socketDirectory)") }
        if tls != .prefer, socketDirectory == nil || tls != .disable { query.append("sslmode=\(tls.rawValue)") }
        if schema != "corral" { query.append("schema=\(schema)") }
        return query.isEmpty ? text : text + "?" + query.joined(separator: "&")
    }

    /// Any text with `scheme://user:password@` in it, the password cut out: for messages about
    /// a URL that did not parse.
    public static func redact(_ text: String) -> String {
        guard let schemeEnd = text.range(of: "://") else { return text }
        let afterScheme = text[schemeEnd.upperBound...]
        let authorityEnd = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? afterScheme.endIndex
        let authority = afterScheme[..<authorityEnd]
        guard let at = authority.lastIndex(of: "@") else { return text }
        let userInfo = authority[..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return text }
        return String(text[..<colon]) + String(text[at...])
    }

    static func isIdentifier(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard (1...63).contains(bytes.count) else { return false }
        for (index, byte) in bytes.enumerated() {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "_"): continue
            case UInt8(ascii: "0")...UInt8(ascii: "9") where index > 0: continue
            default: return false
            }
        }
        return true
    }

    private static func percentDecoded(_ text: Substring) -> String {
        String(text).removingPercentEncoding ?? String(text)
    }
}
