import CorralCore
import CorralGateway
import CorralPolicy
import Foundation
import TestSupport
import Testing

/// Plain git inside a "sandbox" (corral-init forwarding to the gateway socket) against a
/// real git smart-HTTP upstream that demands a token.
@Suite("Git through the gateway")
struct GitProxyTests {
    let sandbox = SandboxID(unchecked: "sb-git0001")

    func writeGrant(_ fixture: GatewayFixture, _ name: String = "rocket", branches: [String]? = nil) throws
        -> GatewayPolicy
    {
        GatewayPolicy(gitGrants: [
            try GitGrant(repository: fixture.repository(name), access: .write, pushableBranches: branches)
        ])
    }

    @Test("clone, commit and push of the sandbox's own branch work, with the vault's credential added on the way")
    func cloneAndPushOwnBranch() async throws {
        try await GatewayFixture.with { fixture in
            try fixture.upstream.createRepository(
                owner: GatewayFixture.owner, name: "rocket", files: ["README.md": "rocket\n"])
            try await fixture.storeToken()
            let session = SessionID(unchecked: "se-git0001")
            try await fixture.withSandbox(sandbox, policy: try writeGrant(fixture), session: session) { proxy in
                let (work, cloned) = try await fixture.clone("rocket", proxy: proxy)
                #expect(cloned.status == 0, "\(cloned.stderr)")
                #expect(try String(contentsOf: work.appendingPathComponent("README.md"), encoding: .utf8) == "rocket\n")

                // The remote inside the sandbox holds no credential, nor does any config.
                let config = try await fixture.git(["config", "--list", "--show-origin"], in: work, proxy: proxy)
                #expect(config.stdout.contains("remote.origin.url=\(fixture.remote("rocket"))"))
                #expect(!config.stdout.contains(fixture.token))

                let branch = GitGrant.defaultBranch(for: sandbox)
                #expect(
                    try await fixture.git(["checkout", "--quiet", "-b", branch], in: work, proxy: proxy).status == 0)
                try await fixture.commit(in: work, content: "one\n", proxy: proxy)
                let pushed = try await fixture.git(["push", "origin", branch], in: work, proxy: proxy)
                #expect(pushed.status == 0, "\(pushed.stderr)")
                let local = try await fixture.git(["rev-parse", "HEAD"], in: work, proxy: proxy).stdout
                #expect(
                    fixture.upstream.head(owner: GatewayFixture.owner, name: "rocket", branch: branch) == local.trimmed)

                // A fast-forward on top goes through the ancestry check.
                try await fixture.commit(in: work, content: "two\n", proxy: proxy)
                let again = try await fixture.git(["push", "origin", branch], in: work, proxy: proxy)
                #expect(again.status == 0, "\(again.stderr)")
                let fetched = try await fixture.git(["fetch", "origin"], in: work, proxy: proxy)
                #expect(fetched.status == 0, "\(fetched.stderr)")
                // Protocol v0 (older clients) works as well as v2.
                let v0 = try await fixture.git(["-c", "protocol.version=0", "fetch", "origin"], in: work, proxy: proxy)
                #expect(v0.status == 0, "\(v0.stderr)")
            }
            // Every upstream request carried the vault's token, none the sandbox's own header.
            let requests = fixture.upstream.requests
            #expect(!requests.isEmpty)
            let expected = "Basic " + Data("x-access-token:\(fixture.token)".utf8).base64EncodedString()
            #expect(requests.filter { !$0.target.hasPrefix("/\(GatewayFixture.owner)/rocket.git/") }.isEmpty)
            #expect(requests.allSatisfy { $0.authorization == expected })
            #expect(requests.contains { $0.method == "POST" && $0.gitProtocol == "version=2" })
            #expect(requests.contains { $0.target.hasSuffix("git-receive-pack") })
            let decisions = fixture.sink.decisions(for: sandbox)
            #expect(
                decisions.contains {
                    $0.action == .gitFetch && $0.verdict == .allowed && $0.credential == "upstream-token"
                })
            #expect(decisions.contains { $0.action == .gitPush && $0.verdict == .allowed })
            #expect(fixture.sink.sessions(for: sandbox).allSatisfy { $0 == session })
            #expect(fixture.logs.all.contains { $0.contains("gateway decision") && $0.contains("verdict=allowed") })
        }
    }

    @Test("a push to main is refused, and git prints why")
    func pushToMainRefused() async throws {
        try await GatewayFixture.with { fixture in
            try fixture.upstream.createRepository(owner: GatewayFixture.owner, name: "rocket")
            try await fixture.storeToken()
            let before = fixture.upstream.head(owner: GatewayFixture.owner, name: "rocket", branch: "main")
            try await fixture.withSandbox(sandbox, policy: try writeGrant(fixture)) { proxy in
                let (work, cloned) = try await fixture.clone("rocket", proxy: proxy)
                #expect(cloned.status == 0, "\(cloned.stderr)")
                try await fixture.commit(in: work, content: "to main\n", proxy: proxy)
                let pushed = try await fixture.git(["push", "origin", "main"], in: work, proxy: proxy)
                #expect(pushed.status != 0)
                #expect(pushed.stderr.contains("[remote rejected]"), "\(pushed.stderr)")
                #expect(pushed.stderr.contains("refs/heads/main is not pushable from this sandbox"), "\(pushed.stderr)")
                #expect(
                    pushed.stderr.contains("remote: corral gateway: refs/heads/main is not pushable"),
                    "\(pushed.stderr)")
            }
            #expect(fixture.upstream.head(owner: GatewayFixture.owner, name: "rocket", branch: "main") == before)
            #expect(fixture.sink.decisions(for: sandbox).contains { $0.action == .gitPush && $0.verdict == .denied })
        }
    }

    @Test("a force-push and a branch deletion are refused, and the branch stays where it was")
    func forcePushRefused() async throws {
        try await GatewayFixture.with { fixture in
            try fixture.upstream.createRepository(owner: GatewayFixture.owner, name: "rocket")
            try await fixture.storeToken()
            let branch = GitGrant.defaultBranch(for: sandbox)
            try await fixture.withSandbox(sandbox, policy: try writeGrant(fixture)) { proxy in
                let (work, _) = try await fixture.clone("rocket", proxy: proxy)
                _ = try await fixture.git(["checkout", "--quiet", "-b", branch], in: work, proxy: proxy)
                try await fixture.commit(in: work, content: "first\n", proxy: proxy)
                #expect(try await fixture.git(["push", "origin", branch], in: work, proxy: proxy).status == 0)
                let pushedHead = fixture.upstream.head(owner: GatewayFixture.owner, name: "rocket", branch: branch)

                // Rewrite history: a new commit that does not descend from the pushed one.
                #expect(
                    try await fixture.git(["reset", "--quiet", "--hard", "HEAD~1"], in: work, proxy: proxy).status == 0)
                try await fixture.commit(in: work, file: "other.txt", content: "rewritten\n", proxy: proxy)
                let forced = try await fixture.git(["push", "--force", "origin", branch], in: work, proxy: proxy)
                #expect(forced.status != 0)
                #expect(
                    forced.stderr.contains("remote: corral gateway: refs/heads/\(branch): force-push refused"),
                    "\(forced.stderr)")
                #expect(
                    fixture.upstream.head(owner: GatewayFixture.owner, name: "rocket", branch: branch) == pushedHead)

                let deleted = try await fixture.git(["push", "origin", ":\(branch)"], in: work, proxy: proxy)
                #expect(deleted.status != 0)
                #expect(deleted.stderr.contains("deleting refs/heads/\(branch) is refused"), "\(deleted.stderr)")
                #expect(
                    fixture.upstream.head(owner: GatewayFixture.owner, name: "rocket", branch: branch) == pushedHead)
            }
            // The fast-forward check kept a mirror keyed by tenant.
            let mirrors = fixture.directory.appendingPathComponent("state/gateway/mirrors/\(TenantID.local)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: mirrors.path).count == 1)
        }
    }

    @Test("a repository without a grant is refused, and so is a push under a read-only grant")
    func ungrantedAndReadOnly() async throws {
        try await GatewayFixture.with { fixture in
            try fixture.upstream.createRepository(owner: GatewayFixture.owner, name: "rocket")
            try fixture.upstream.createRepository(owner: GatewayFixture.owner, name: "secret")
            try await fixture.storeToken()
            let policy = GatewayPolicy(gitGrants: [
                try GitGrant(repository: fixture.repository("rocket"), access: .read)
            ])
            try await fixture.withSandbox(sandbox, policy: policy) { proxy in
                let (_, refused) = try await fixture.clone("secret", proxy: proxy, into: "secret")
                #expect(refused.status != 0)
                #expect(
                    refused.stderr.contains(
                        "remote: corral gateway: this sandbox has no grant for \(fixture.repository("secret"))"),
                    "\(refused.stderr)")

                let (work, cloned) = try await fixture.clone("rocket", proxy: proxy)
                #expect(cloned.status == 0, "\(cloned.stderr)")
                _ = try await fixture.git(
                    ["checkout", "--quiet", "-b", GitGrant.defaultBranch(for: sandbox)], in: work, proxy: proxy)
                try await fixture.commit(in: work, content: "x\n", proxy: proxy)
                let pushed = try await fixture.git(["push", "origin", "HEAD"], in: work, proxy: proxy)
                #expect(pushed.status != 0)
                #expect(pushed.stderr.contains("granted read-only to this sandbox"), "\(pushed.stderr)")
            }
            #expect(!fixture.upstream.requests.contains { $0.target.contains("/secret.git/") })
            #expect(
                fixture.sink.decisions(for: sandbox).contains {
                    $0.verdict == .denied && $0.target == fixture.repository("secret")
                })
        }
    }

    @Test("a missing credential, a revoked one and an unreachable host each reach git as a clear reason")
    func credentialProblems() async throws {
        try await GatewayFixture.with { fixture in
            try fixture.upstream.createRepository(owner: GatewayFixture.owner, name: "rocket")
            let closedPort = try freeLoopbackPort()
            let policy = GatewayPolicy(gitGrants: [
                try GitGrant(repository: fixture.repository("rocket"), access: .read),
                try GitGrant(repository: "127.0.0.1:\(closedPort)/\(GatewayFixture.owner)/gone", access: .read),
            ])
            try await fixture.withSandbox(sandbox, policy: policy) { proxy in
                let (_, missing) = try await fixture.clone("rocket", proxy: proxy, into: "missing")
                #expect(missing.status != 0)
                #expect(missing.stderr.contains("the vault holds none whose scope covers"), "\(missing.stderr)")

                try await fixture.storeToken()
                let (_, ok) = try await fixture.clone("rocket", proxy: proxy, into: "ok")
                #expect(ok.status == 0, "\(ok.stderr)")

                fixture.upstream.revoke(fixture.token)
                let (_, revoked) = try await fixture.clone("rocket", proxy: proxy, into: "revoked")
                #expect(revoked.status != 0)
                #expect(revoked.stderr.contains("refused the vault credential 'upstream-token'"), "\(revoked.stderr)")
                #expect(revoked.stderr.contains("revoked or expired"), "\(revoked.stderr)")

                let gone = "http://git.corral/127.0.0.1:\(closedPort)/\(GatewayFixture.owner)/gone.git"
                let unreachable = try await fixture.git(
                    ["clone", gone, fixture.directory.appendingPathComponent("gone").path], proxy: proxy)
                #expect(unreachable.status != 0)
                #expect(
                    unreachable.stderr.contains("remote: corral gateway: cannot reach 127.0.0.1:\(closedPort)"),
                    "\(unreachable.stderr)")
            }
        }
    }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
