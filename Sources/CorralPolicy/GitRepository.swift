import CorralCore

/// A repository on a git host: `HOST/OWNER/REPO`, as grants and gateway URLs name it.
///
/// The host is lower-cased and may carry a port (`127.0.0.1:8080`, `[::1]:8080`); owner and
/// name keep their case and are compared exactly, since a host may treat `Repo` and `repo` as
/// different repositories. A trailing `.git` is not part of the name. Every part is checked
/// so that it can be joined to a URL without escaping and can never climb out of a path.
public struct GitRepository: Sendable, Hashable, Codable, CustomStringConvertible, Comparable {
    public let host: String
    public let owner: String
    public let name: String

    /// The host name the credential-free remotes inside a sandbox use.
    public static let gatewayHost = "git.corral"

    public init(host: String, owner: String, name: String) throws {
        self.host = try Self.checkHost(host)
        self.owner = try Self.checkSegment(owner, what: "owner")
        self.name = try Self.checkSegment(Self.dropGitSuffix(name), what: "repository name")
    }

    /// Reads `HOST/OWNER/REPO[.git]`, `https://HOST/OWNER/REPO[.git]`, or a gateway remote
    /// `http://git.corral/HOST/OWNER/REPO[.git]`.
    public init(parsing text: String) throws {
        var rest = Substring(text)
        if let schemeEnd = rest.range(of: "://") {
            let scheme = rest[..<schemeEnd.lowerBound].lowercased()
            guard scheme == "https" || scheme == "http" else {
                throw Self.invalid(text, "only https:// (or http:// to a loopback host) remotes are supported")
            }
            rest = rest[schemeEnd.upperBound...]
            if rest.lowercased().hasPrefix(Self.gatewayHost + "/") {
                rest = rest.dropFirst(Self.gatewayHost.count + 1)
            }
        }
        while rest.hasSuffix("/") { rest.removeLast() }
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            throw Self.invalid(text, "expected HOST/OWNER/REPO")
        }
        do {
            try self.init(host: String(parts[0]), owner: String(parts[1]), name: String(parts[2]))
        } catch let error as CorralError {
            throw Self.invalid(text, error.message)
        }
    }

    /// `HOST/OWNER/REPO`.
    public var description: String { "\(host)/\(owner)/\(name)" }

    /// The remote a sandbox clones from: no credential, only the gateway's name.
    public var gatewayRemoteURL: String { "http://\(Self.gatewayHost)/\(description).git" }

    /// True when the host is a loopback address, the only place plain HTTP is used.
    public var isLoopbackHost: Bool { Self.isLoopback(host: host) }

    /// The upstream base URL: HTTPS, or HTTP for a loopback host (tests).
    public var upstreamBaseURL: String {
        "\(isLoopbackHost ? "http" : "https")://\(host)/\(owner)/\(name).git"
    }

    /// The upstream's host (an IPv6 literal without brackets) and port: the one given, else
    /// 443, or 80 for the plain HTTP of a loopback host.
    package var upstreamHostAndPort: (host: String, port: Int) {
        let bare = Self.hostWithoutPort(host)
        var port = isLoopbackHost ? 80 : 443
        if bare.count < host.count, let given = Int(host.dropFirst(bare.count + 1)) { port = given }
        let name = bare.hasPrefix("[") ? String(bare.dropFirst().dropLast()) : bare
        return (name, port)
    }

    public static func < (lhs: GitRepository, rhs: GitRepository) -> Bool { lhs.description < rhs.description }

    public init(from decoder: any Decoder) throws {
        try self.init(parsing: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    // MARK: Checks shared with scopes

    static func invalid(_ text: String, _ why: String) -> CorralError {
        CorralError.invalidArgument(
            "invalid repository '\(text.prefix(200))': \(why)",
            hint: "name a repository as HOST/OWNER/REPO, such as github.com/apple/swift")
    }

    package static func dropGitSuffix(_ name: String) -> String {
        name.hasSuffix(".git") ? String(name.dropLast(4)) : name
    }

    static func isLoopback(host: String) -> Bool {
        let bare = hostWithoutPort(host)
        return bare == "localhost" || bare == "[::1]"
            || (bare.hasPrefix("127.") && bare.allSatisfy { $0.isNumber || $0 == "." })
    }

    /// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
    static func hostWithoutPort(_ host: String) -> String {
        if host.hasPrefix("["), let close = host.firstIndex(of: "]") {
            return String(host[...close])
        }
        if let colon = host.lastIndex(of: ":") { return String(host[..<colon]) }
        return host
    }

    /// Lower-cases and checks `name[:port]` or `[v6]:port`.
    package static func checkHost(_ raw: String) throws -> String {
        let host = raw.lowercased()
        func fail(_ why: String) -> CorralError {
            CorralError.invalidArgument("invalid host '\(raw.prefix(200))': \(why)")
        }
        guard !host.isEmpty else { throw fail("it is empty") }
        guard host.utf8.count <= 260 else { throw fail("it is too long") }
        var name = Substring(host)
        var port: Substring?
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { throw fail("unclosed '['") }
            let inside = host[host.index(after: host.startIndex)..<close]
            guard !inside.isEmpty, inside.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else {
                throw fail("not an IPv6 address")
            }
            let after = host[host.index(after: close)...]
            if after.hasPrefix(":") {
                port = after.dropFirst()
            } else if !after.isEmpty {
                throw fail("junk after ']'")
            }
            name = host[...close]
        } else {
            if let colon = host.firstIndex(of: ":") {
                name = host[..<colon]
                port = host[host.index(after: colon)...]
            }
            guard !name.isEmpty, !name.hasPrefix("."), !name.hasPrefix("-"),
                name.unicodeScalars.allSatisfy({
                    ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "." || $0 == "-"
                })
            else {
                throw fail("a host is letters, digits, '.' and '-'")
            }
        }
        if let port {
            guard let number = Int(port), (1...65535).contains(number), String(number) == port else {
                throw fail("bad port '\(port)'")
            }
        }
        return host
    }

    /// An owner or repository name: letters, digits, `.`, `_`, `-`; never `.` or `..`.
    package static func checkSegment(_ text: String, what: String) throws -> String {
        guard !text.isEmpty else { throw CorralError.invalidArgument("the \(what) is empty") }
        guard text.utf8.count <= 100 else {
            throw CorralError.invalidArgument("the \(what) is longer than 100 characters")
        }
        guard text != ".", text != ".." else {
            throw CorralError.invalidArgument("the \(what) '\(text)' is not allowed")
        }
        let allowed = text.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "." || $0 == "_"
                || $0 == "-"
        }
        guard allowed, !text.hasPrefix("-") else {
            throw CorralError.invalidArgument(
                "the \(what) '\(text.prefix(100))' may hold only letters, digits, '.', '_' and '-'")
        }
        return text
    }
}
