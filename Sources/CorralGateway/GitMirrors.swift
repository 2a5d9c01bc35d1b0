import CorralCore
import CorralPolicy
import Crypto
import Foundation
import Logging

/// Host-side bare mirrors of upstream repositories, one per (tenant, repository), used to
/// decide whether a push is a fast-forward.
///
/// A push's pack is thin: it leaves out what the client believes the upstream has. To see
/// both the old and the new commit, the mirror fetches the upstream's branches, the pack is
/// indexed into a quarantine object directory that borrows the mirror's objects, and
/// `git merge-base --is-ancestor old new` decides. The quarantine is thrown away after; the
/// mirror keeps only what the upstream itself has. Mirrors are keyed by tenant, so a later
/// clone cache built on them can never serve one tenant what another's grant fetched.
final class GitMirrors: Sendable {
    let root: URL
    let spoolRoot: URL
    let git: GitRunner
    let upstreamCAFile: String?
    private let locks = KeyedLocks()
    private let logger: Logger

    init(configuration: Gateway.Configuration, logger: Logger) {
        root = configuration.workDirectory.appendingPathComponent("mirrors", isDirectory: true)
        spoolRoot = configuration.workDirectory.appendingPathComponent("spool", isDirectory: true)
        git = GitRunner(executable: configuration.gitExecutable, home: configuration.workDirectory)
        upstreamCAFile = configuration.upstreamTLS?.caFile
        self.logger = logger
    }

    /// `mirrors/<tenant>/<hash of HOST/OWNER/REPO>.git`.
    func mirrorDirectory(tenant: TenantID, repository: GitRepository) -> URL {
        let digest = SHA256.hash(data: Data(repository.description.utf8)).map { String(format: "%02x", $0) }.joined()
        return root.appendingPathComponent(tenant.rawValue, isDirectory: true)
            .appendingPathComponent("\(digest.prefix(32)).git", isDirectory: true)
    }

    /// A fresh directory for one push's spool and quarantine; the caller removes it.
    func makeSpoolDirectory() throws -> URL {
        let directory = spoolRoot.appendingPathComponent(UUID().uuidString, isDirectory: true)
        do {
            try FileManager.default.createDirectory(
                at: directory.appendingPathComponent("objects/pack", isDirectory: true),
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700])
        } catch {
            throw CorralError(.io, "cannot make a spool directory under \(spoolRoot.path)", underlying: error)
        }
        return directory
    }

    /// For each update (old and new both set), nil when it fast-forwards, else why not.
    /// Throws when the check itself cannot be made.
    func checkFastForwards(
        _ updates: [ReceivePackRequest.Command], repository: GitRepository, tenant: TenantID,
        credential: ResolvedCredential?, upstream: DialTarget, spoolDirectory: URL, pushFile: URL, packOffset: Int64,
        packPresent: Bool
    ) async throws -> [String: String] {
        let mirror = mirrorDirectory(tenant: tenant, repository: repository)
        let secrets = credential?.redactions ?? []
        try await locks.withLock(mirror.path) { [self] in
            if !FileManager.default.fileExists(atPath: mirror.appendingPathComponent("HEAD").path) {
                try FileManager.default.createDirectory(
                    at: mirror.deletingLastPathComponent(), withIntermediateDirectories: true)
                let made = try await git.run(["init", "--bare", "--quiet", mirror.path])
                guard made.status == 0 else {
                    throw CorralError(.io, "cannot make the mirror \(mirror.path): \(made.output)")
                }
            }
            var missing = false
            for update in updates {
                if try await !hasCommit(update.old, in: mirror, environment: [:]) { missing = true }
            }
            if missing {
                try await fetch(
                    into: mirror, repository: repository, credential: credential, upstream: upstream, secrets: secrets)
            }
        }
        let quarantine: [String: String] = [
            "GIT_OBJECT_DIRECTORY": spoolDirectory.appendingPathComponent("objects").path,
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": mirror.appendingPathComponent("objects").path,
        ]
        if packPresent {
            let indexed = try await git.run(
                ["--git-dir=\(mirror.path)", "index-pack", "--stdin", "--fix-thin"], environment: quarantine,
                stdinFile: (pushFile, UInt64(packOffset)))
            guard indexed.status == 0 else {
                throw CorralError(
                    .invalidArgument, "the pushed pack cannot be indexed: \(Self.firstLine(indexed.output))")
            }
        }
        var verdicts: [String: String] = [:]
        for update in updates {
            guard try await hasCommit(update.old, in: mirror, environment: quarantine) else {
                verdicts[update.ref] =
                    "cannot check for a force-push: \(repository.host) has no commit \(update.old.prefix(12)); fetch first"
                continue
            }
            let ancestry = try await git.run(
                ["--git-dir=\(mirror.path)", "merge-base", "--is-ancestor", update.old, update.new],
                environment: quarantine)
            switch ancestry.status {
            case 0: continue
            case 1:
                verdicts[update.ref] =
                    "force-push refused: \(update.old.prefix(12)) is not an ancestor of \(update.new.prefix(12))"
            default:
                verdicts[update.ref] = "cannot check for a force-push: \(Self.firstLine(ancestry.output))"
            }
        }
        return verdicts
    }

    private func hasCommit(_ id: String, in mirror: URL, environment: [String: String]) async throws -> Bool {
        let probe = try await git.run(
            ["--git-dir=\(mirror.path)", "cat-file", "-e", "\(id)^{commit}"], environment: environment)
        return probe.status == 0
    }

    /// Fetches the upstream's branches into the mirror. The credential travels in the
    /// environment as an extra header, never in a URL or an argument.
    private func fetch(
        into mirror: URL, repository: GitRepository, credential: ResolvedCredential?, upstream: DialTarget,
        secrets: [String]
    ) async throws {
        var environment: [String: String] = [:]
        var settings: [(String, String)] = []
        if let credential { settings.append(("http.extraHeader", "Authorization: \(credential.authorizationHeader)")) }
        if let upstreamCAFile { settings.append(("http.sslCAInfo", upstreamCAFile)) }
        // The address the gateway checked, so that git's own resolution cannot pick another. A
        // literal needs none: it is its own address.
        if !EgressAddress.isLiteral(upstream.host) {
            settings.append(("http.curloptResolve", "\(upstream.host):\(upstream.port):\(upstream.urlAddress)"))
        }
        environment["GIT_CONFIG_COUNT"] = "\(settings.count)"
        for (index, setting) in settings.enumerated() {
            environment["GIT_CONFIG_KEY_\(index)"] = setting.0
            environment["GIT_CONFIG_VALUE_\(index)"] = setting.1
        }
        let fetched = try await git.run(
            [
                "--git-dir=\(mirror.path)", "fetch", "--quiet", "--no-tags", "--prune", "--no-write-fetch-head",
                repository.upstreamBaseURL, "+refs/heads/*:refs/heads/*",
            ], environment: environment, redacting: secrets)
        logger.debug(
            "gateway mirror fetch", metadata: ["repository": "\(repository)", "status": "\(fetched.status)"])
        guard fetched.status == 0 else {
            throw CorralError(
                .unavailable,
                "fetching \(repository) into the gateway's mirror failed: \(Self.firstLine(fetched.output))")
        }
    }

    static func firstLine(_ text: String) -> String {
        let line = text.split(whereSeparator: \.isNewline).first.map(String.init) ?? "no output"
        return String(line.prefix(300))
    }
}
