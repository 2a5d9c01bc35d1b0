import CorralPolicy

/// A smart-HTTP request to `http://git.corral/HOST/OWNER/REPO(.git)/…`, as the gateway
/// understands it. Anything else under git.corral (the dumb protocol, odd paths, odd
/// methods) is refused.
struct GitRequest: Sendable, Equatable {
    enum Service: String, Sendable {
        case uploadPack = "git-upload-pack"
        case receivePack = "git-receive-pack"
    }

    enum Kind: Sendable, Equatable {
        /// `GET …/info/refs?service=…`
        case advertisement
        /// `POST …/git-upload-pack` or `POST …/git-receive-pack`
        case rpc
    }

    var repository: GitRepository
    var service: Service
    var kind: Kind
    /// The query as sent, forwarded unchanged.
    var query: String?

    /// The path and query on the upstream: `/OWNER/REPO.git/…`.
    var upstreamPath: String {
        let base = "/\(repository.owner)/\(repository.name).git"
        switch kind {
        case .advertisement: return base + "/info/refs" + (query.map { "?" + $0 } ?? "")
        case .rpc: return base + "/" + service.rawValue
        }
    }

    /// Parses the origin-form path of a request to git.corral. Throws `HTTPFailure`.
    init(method: String, pathAndQuery: String) throws {
        var path = Substring(pathAndQuery)
        var query: String?
        if let mark = path.firstIndex(of: "?") {
            query = String(path[path.index(after: mark)...])
            path = path[..<mark]
        }
        let usage = "use http://git.corral/HOST/OWNER/REPO.git as the remote"
        guard !path.contains("%") else {
            throw HTTPFailure(400, "corral gateway: percent-encoded git paths are not accepted; \(usage)")
        }
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()  // leading "/"
        guard segments.count >= 4 else { throw HTTPFailure(404, "corral gateway: not a git path; \(usage)") }
        let parts = Array(segments)
        do {
            repository = try GitRepository(host: String(parts[0]), owner: String(parts[1]), name: String(parts[2]))
        } catch {
            throw HTTPFailure(400, "corral gateway: '\(String(path).prefix(200))' does not name a repository; \(usage)")
        }
        let rest = parts[3...].joined(separator: "/")
        switch (method, rest) {
        case ("GET", "info/refs"):
            let service = query?.split(separator: "&").first { $0.hasPrefix("service=") }.map {
                String($0.dropFirst(8))
            }
            guard let service, let known = Service(rawValue: service) else {
                throw HTTPFailure(
                    403,
                    "corral gateway: only git's smart HTTP protocol is served (git 1.6.6 or later); the dumb protocol is not"
                )
            }
            self.service = known
            kind = .advertisement
        case ("POST", "git-upload-pack"):
            service = .uploadPack
            kind = .rpc
        case ("POST", "git-receive-pack"):
            service = .receivePack
            kind = .rpc
        default:
            throw HTTPFailure(
                404,
                "corral gateway: \(method) \(rest.prefix(100)) is not part of git's smart HTTP protocol; only info/refs, git-upload-pack and git-receive-pack are served"
            )
        }
        self.query = kind == .advertisement ? query : nil
    }
}
