import CorralCore

/// What one sandbox may reach through its gateway: git repositories by grant, and other
/// hosts by name. Everything else is denied.
public struct GatewayPolicy: Sendable, Hashable, Codable {
    public var gitGrants: [GitGrant]
    /// Hosts that plain HTTP requests and CONNECT tunnels may reach: `example.com` (any
    /// port), `example.com:8443` (that port only), or `*.example.com` (its subdomains, any
    /// port). Compared without case.
    public var egressHosts: [String]

    public init(gitGrants: [GitGrant] = [], egressHosts: [String] = []) {
        self.gitGrants = gitGrants
        self.egressHosts = egressHosts
    }

    /// The grant for `repository`, if any. When one repository is granted twice, write wins.
    public func grant(for repository: GitRepository) -> GitGrant? {
        let matching = gitGrants.filter { $0.repository == repository }
        return matching.first { $0.access == .write } ?? matching.first
    }

    /// Whether `host` (without brackets for IPv6) on `port` is allow-listed. A wildcard never
    /// matches an address literal in any spelling (`*.0.0.1` is not `127.0.0.1`). Being listed
    /// is not enough to be dialled: `DialPolicy` decides on the address.
    public func allowsEgress(host: String, port: Int) -> Bool {
        let host = host.lowercased()
        let literal = HostLiteral.isLiteral(host)
        return egressHosts.contains { entry in
            guard let (entryHost, entryPort) = Self.splitEntry(entry.lowercased()) else { return false }
            if let entryPort, entryPort != port { return false }
            if entryHost.hasPrefix("*.") {
                guard !literal else { return false }
                let suffix = entryHost.dropFirst()  // ".example.com"
                return host.hasSuffix(suffix) && host.count > suffix.count
            }
            return entryHost == host
        }
    }

    /// Checks one allow-list entry as it comes from a template or `--allow-host`, and returns
    /// it lower-cased. A URL, a path or a malformed host is refused with what to write instead,
    /// since an entry that can never match would otherwise deny in silence.
    public static func checkEgressHost(_ entry: String) throws -> String {
        let lowered = entry.lowercased()
        func fail(_ why: String) -> CorralError {
            CorralError.invalidArgument(
                "invalid egress host '\(entry.prefix(200))': \(why)",
                hint: "write a host, host:port or *.domain, such as pypi.org or files.example.com:8443")
        }
        guard !lowered.contains("://"), !lowered.contains("/") else { throw fail("a host, not a URL or a path") }
        guard let (host, _) = splitEntry(lowered) else { throw fail("a port must be a number") }
        let name = host.hasPrefix("*.") ? String(host.dropFirst(2)) : host
        if host.hasPrefix("*.") && (name.allSatisfy { $0.isNumber || $0 == "." } || name.contains(":")) {
            throw fail("a wildcard covers host names, never addresses; list the address itself")
        }
        do {
            _ = try GitRepository.checkHost(name.contains(":") ? "[\(name)]" : name)
        } catch let error as CorralError {
            throw fail(error.message)
        }
        if let (_, port) = splitEntry(lowered), let port, !(1...65535).contains(port) {
            throw fail("port \(port) is out of range")
        }
        return lowered
    }

    /// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; nil when malformed.
    package static func splitEntry(_ entry: String) -> (host: String, port: Int?)? {
        if entry.hasPrefix("[") {
            guard let close = entry.firstIndex(of: "]") else { return nil }
            let host = String(entry[entry.index(after: entry.startIndex)..<close])
            let after = entry[entry.index(after: close)...]
            if after.isEmpty { return (host, nil) }
            guard after.hasPrefix(":"), let port = Int(after.dropFirst()) else { return nil }
            return (host, port)
        }
        let colons = entry.filter { $0 == ":" }.count
        if colons == 1, let colon = entry.firstIndex(of: ":") {
            guard let port = Int(entry[entry.index(after: colon)...]) else { return nil }
            return (String(entry[..<colon]), port)
        }
        return (entry, nil)
    }
}

/// Access to one repository for one sandbox.
public struct GitGrant: Sendable, Hashable, Codable {
    public enum Access: String, Sendable, Hashable, Codable {
        /// Clone and fetch.
        case read
        /// Clone, fetch, and push to the pushable branches (fast-forward only).
        case write
    }

    public var repository: GitRepository
    public var access: Access
    /// Branch names (without `refs/heads/`) a push may update or create. Nil means the
    /// sandbox's own branch only, `corral/<sandbox id>`.
    public var pushableBranches: [String]?

    public init(repository: GitRepository, access: Access, pushableBranches: [String]? = nil) {
        self.repository = repository
        self.access = access
        self.pushableBranches = pushableBranches
    }

    /// Parses the repository from `HOST/OWNER/REPO` or a URL.
    public init(repository: String, access: Access, pushableBranches: [String]? = nil) throws {
        self.init(
            repository: try GitRepository(parsing: repository), access: access, pushableBranches: pushableBranches)
    }

    /// The branch a sandbox may push when its grant names none.
    public static func defaultBranch(for sandbox: SandboxID) -> String { "corral/\(sandbox.rawValue)" }

    /// The branches `sandbox` may push under this grant; empty for a read grant.
    public func branches(for sandbox: SandboxID) -> [String] {
        guard access == .write else { return [] }
        return pushableBranches ?? [Self.defaultBranch(for: sandbox)]
    }
}
