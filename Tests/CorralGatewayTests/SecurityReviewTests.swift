import CorralCore
import CorralGateway
import CorralPolicy
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The outside security review's findings, each tried the way an attacker inside a sandbox
/// would: plain git and raw proxy requests through the sandbox's own gateway socket.
@Suite("Security review: the gateway as an attacker sees it")
struct SecurityReviewTests {
    static let alpha = TenantID(unchecked: "tn-alpha")
    static let beta = TenantID(unchecked: "tn-beta")

    /// Every way of writing the host's own loopback (or "this host") that a resolver takes.
    static func loopbackSpellings(port: Int) -> [String] {
        [
            "127.0.0.1", "127.1", "0x7f.0.0.1", "2130706433", "017700000001", "[::1]", "[::ffff:127.0.0.1]",
            "localhost", "0", "0.0.0.0",
        ].map { "\($0):\(port)" }
    }

    // MARK: Finding 1: one vault for every tenant

    /// Security review finding 1: tenant beta names a repository inside the scope of tenant
    /// alpha's credential. The gateway must not lend alpha's token to beta's sandbox.
    @Test("one tenant's credential never serves another tenant's sandbox, whatever repository it names")
    func credentialStaysWithItsTenant() async throws {
        try await GatewayFixture.with(upstream: { configuration, port in
            // The upstream is on loopback: open it to network tenants, as an operator would.
            configuration.dialPolicy = try DialPolicy(privateHosts: ["127.0.0.1:\(port)"])
        }) { fixture in
            try fixture.upstream.createRepository(owner: GatewayFixture.owner, name: "rocket")
            try await fixture.storeToken(tenant: Self.alpha)
            let grant = GatewayPolicy(gitGrants: [try GitGrant(repository: fixture.repository("rocket"), access: .read)]
            )
            let attacker = SandboxID(unchecked: "sb-beta0001")
            try await fixture.withSandbox(attacker, policy: grant, tenant: Self.beta) { proxy in
                let (_, stolen) = try await fixture.clone("rocket", proxy: proxy, into: "stolen")
                #expect(stolen.status != 0, "tenant beta cloned with tenant alpha's credential")
                #expect(stolen.stderr.contains("the vault holds none whose scope covers"), "\(stolen.stderr)")
            }
            let expected = "Basic " + Data("x-access-token:\(fixture.token)".utf8).base64EncodedString()
            #expect(
                !fixture.upstream.requests.contains { $0.authorization == expected },
                "beta's requests carried the token")
            #expect(!fixture.sink.decisions(for: attacker).contains { $0.credential != nil })

            let owner = SandboxID(unchecked: "sb-alpha001")
            try await fixture.withSandbox(owner, policy: grant, tenant: Self.alpha) { proxy in
                let (_, cloned) = try await fixture.clone("rocket", proxy: proxy, into: "owned")
                #expect(cloned.status == 0, "\(cloned.stderr)")
            }
            #expect(fixture.upstream.requests.contains { $0.authorization == expected })
        }
    }

    /// Security review finding 1: a network tenant with write access asks for `main`. Only its
    /// sandbox's own branch, and what the operator's push_branches gives it, are pushable.
    @Test("a network tenant pushes only its sandbox's own branch and what push_branches allows it")
    func pushBranchesPerTenant() async throws {
        let attacker = SandboxID(unchecked: "sb-beta0002")
        let own = GitGrant.defaultBranch(for: attacker)
        try await GatewayFixture.with(upstream: { configuration, port in
            configuration.dialPolicy = try DialPolicy(privateHosts: ["127.0.0.1:\(port)"])
            configuration.pushBranches = try PushBranchRules([Self.beta: ["release/*"]])
        }) { fixture in
            try fixture.upstream.createRepository(owner: GatewayFixture.owner, name: "rocket")
            try await fixture.storeToken(tenant: Self.beta)
            let mainBefore = fixture.upstream.head(owner: GatewayFixture.owner, name: "rocket", branch: "main")
            // The policy as a request for `branch: main` with write would have made it.
            let policy = GatewayPolicy(gitGrants: [
                try GitGrant(
                    repository: fixture.repository("rocket"), access: .write,
                    pushableBranches: ["main", own, "release/1.0"])
            ])
            try await fixture.withSandbox(attacker, policy: policy, tenant: Self.beta) { proxy in
                let (work, cloned) = try await fixture.clone("rocket", proxy: proxy)
                #expect(cloned.status == 0, "\(cloned.stderr)")
                try await fixture.commit(in: work, content: "to main\n", proxy: proxy)
                let toMain = try await fixture.git(["push", "origin", "HEAD:main"], in: work, proxy: proxy)
                #expect(toMain.status != 0, "tenant beta pushed to main")
                #expect(toMain.stderr.contains("[gateway.push_branches]"), "\(toMain.stderr)")
                let toOwn = try await fixture.git(["push", "origin", "HEAD:\(own)"], in: work, proxy: proxy)
                #expect(toOwn.status == 0, "\(toOwn.stderr)")
                let toRelease = try await fixture.git(["push", "origin", "HEAD:release/1.0"], in: work, proxy: proxy)
                #expect(toRelease.status == 0, "\(toRelease.stderr)")
            }
            #expect(fixture.upstream.head(owner: GatewayFixture.owner, name: "rocket", branch: "main") == mainBefore)
            #expect(fixture.upstream.head(owner: GatewayFixture.owner, name: "rocket", branch: own) != nil)
        }
    }

    // MARK: Finding 2: the host's own loopback

    /// Security review finding 2: a network tenant allow-lists the host's loopback in every
    /// spelling and asks for it through CONNECT and absolute-form http. None gets through.
    @Test("a network tenant reaches the host's loopback in no spelling, by CONNECT or plain http")
    func loopbackInEverySpelling() async throws {
        let server = try EgressTests.upstream()
        defer { server.stop() }
        let port = try #require(server.port)
        let spellings = Self.loopbackSpellings(port: port)
        try await GatewayFixture.with { fixture in
            let attacker = SandboxID(unchecked: "sb-beta0003")
            let socket = try await fixture.attach(
                attacker, policy: GatewayPolicy(egressHosts: spellings + ["*.0.0.1", "*.1"]), tenant: Self.beta)
            let answers = try await runOnThread { () -> [(String, String)] in
                var answers: [(String, String)] = []
                for target in spellings {
                    answers.append(
                        (
                            "GET \(target)",
                            try TCPClient.exchange(
                                unixSocket: socket, "GET http://\(target)/x HTTP/1.1\r\nHost: \(target)\r\n\r\n")
                        ))
                    answers.append(
                        (
                            "CONNECT \(target)",
                            try TCPClient.exchange(
                                unixSocket: socket, "CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n\r\n")
                        ))
                }
                return answers
            }
            for (request, answer) in answers {
                #expect(answer.hasPrefix("HTTP/1.1 403"), "\(request): \(answer.prefix(300))")
                #expect(answer.contains("internal address"), "\(request): \(answer.prefix(300))")
            }
            #expect(
                !fixture.sink.decisions(for: attacker).contains { $0.verdict == .allowed },
                "an internal address was allowed")
        }
        #expect(server.requests.isEmpty, "a request reached the host's loopback: \(server.requests.map(\.target))")
    }

    /// Security review finding 2: `*.0.0.1` used to match `127.0.0.1`. A wildcard covers host
    /// names only, for every tenant, the operator's included.
    @Test("a wildcard never matches an address literal, not even for the local tenant")
    func wildcardsSkipLiterals() async throws {
        let server = try EgressTests.upstream()
        defer { server.stop() }
        let port = try #require(server.port)
        try await GatewayFixture.with { fixture in
            let socket = try await fixture.attach(
                SandboxID(unchecked: "sb-wild0001"), policy: GatewayPolicy(egressHosts: ["*.0.0.1", "*.1"]))
            for target in ["127.0.0.1:\(port)", "0x7f.0.0.1:\(port)"] {
                let answer = try await runOnThread {
                    try TCPClient.exchange(
                        unixSocket: socket, "GET http://\(target)/x HTTP/1.1\r\nHost: \(target)\r\n\r\n")
                }
                #expect(answer.hasPrefix("HTTP/1.1 403"), "\(target): \(answer.prefix(300))")
                #expect(answer.contains("not on this sandbox's allow-list"), "\(answer.prefix(300))")
            }
        }
        #expect(server.requests.isEmpty)
        #expect(throws: CorralError.self) { try GatewayPolicy.checkEgressHost("*.0.0.1") }
        #expect(!GatewayPolicy(egressHosts: ["*.0.0.1"]).allowsEgress(host: "127.0.0.1", port: 80))
        #expect(GatewayPolicy(egressHosts: ["*.example.com"]).allowsEgress(host: "a.example.com", port: 80))
    }

    /// Security review finding 2: a network tenant names the host's loopback as its
    /// repository's host, in several spellings, with a credential of its own. The gateway
    /// refuses before it connects, so the upstream (standing in for any host port) sees nothing.
    @Test("a network tenant's repository on the host's loopback is refused before any connection")
    func repositoryOnLoopback() async throws {
        try await GatewayFixture.with { fixture in
            try fixture.upstream.createRepository(owner: GatewayFixture.owner, name: "rocket")
            let port = fixture.upstream.port
            let hosts = ["127.0.0.1", "127.1", "localhost", "[::1]", "2130706433"].map { "\($0):\(port)" }
            for host in hosts {
                try await fixture.storeToken(scope: "\(host)/\(GatewayFixture.owner)", tenant: Self.beta)
            }
            let policy = GatewayPolicy(
                gitGrants: try hosts.map {
                    try GitGrant(repository: "\($0)/\(GatewayFixture.owner)/rocket", access: .read)
                })
            let attacker = SandboxID(unchecked: "sb-beta0004")
            try await fixture.withSandbox(attacker, policy: policy, tenant: Self.beta) { proxy in
                for (index, host) in hosts.enumerated() {
                    let remote = "http://git.corral/\(host)/\(GatewayFixture.owner)/rocket.git"
                    let cloned = try await fixture.git(
                        ["clone", remote, fixture.directory.appendingPathComponent("c\(index)").path], proxy: proxy)
                    #expect(cloned.status != 0, "\(host): cloned")
                    #expect(cloned.stderr.contains("remote: corral gateway: \(host) is refused"), "\(cloned.stderr)")
                    #expect(cloned.stderr.contains("internal address"), "\(cloned.stderr)")
                }
            }
            #expect(fixture.upstream.requests.isEmpty, "the gateway connected to the host's loopback")
        }
    }

    /// Security review finding 2: the operator lists one host:port in private_hosts. A network
    /// tenant reaches exactly that one, whatever it is called, and no other port beside it.
    @Test("the operator's private_hosts opens exactly one host:port to a network tenant")
    func privateHostsOpenOne() async throws {
        let opened = try EgressTests.upstream()
        let closed = try EgressTests.upstream()
        defer {
            opened.stop()
            closed.stop()
        }
        let open = try #require(opened.port)
        let other = try #require(closed.port)
        try await GatewayFixture.with(upstream: { configuration, _ in
            configuration.dialPolicy = try DialPolicy(privateHosts: ["127.0.0.1:\(open)"])
        }) { fixture in
            let socket = try await fixture.attach(
                SandboxID(unchecked: "sb-beta0005"),
                policy: GatewayPolicy(egressHosts: ["127.0.0.1:\(open)", "127.0.0.1:\(other)", "localhost:\(open)"]),
                tenant: Self.beta)
            let answers = try await runOnThread { () -> [String] in
                [
                    try TCPClient.exchange(
                        unixSocket: socket, "GET http://127.0.0.1:\(open)/a HTTP/1.1\r\nHost: 127.0.0.1:\(open)\r\n\r\n"
                    ),
                    try TCPClient.exchange(unixSocket: socket, "GET http://localhost:\(open)/b HTTP/1.1\r\n\r\n"),
                    try TCPClient.exchange(
                        unixSocket: socket,
                        "GET http://127.0.0.1:\(other)/c HTTP/1.1\r\nHost: 127.0.0.1:\(other)\r\n\r\n"),
                    try TCPClient.exchange(unixSocket: socket, "CONNECT 127.0.0.1:\(other) HTTP/1.1\r\n\r\n"),
                ]
            }
            #expect(answers[0].hasPrefix("HTTP/1.1 200"), "\(answers[0].prefix(300))")
            #expect(answers[1].hasPrefix("HTTP/1.1 200"), "\(answers[1].prefix(300))")
            #expect(answers[2].hasPrefix("HTTP/1.1 403"), "\(answers[2].prefix(300))")
            #expect(answers[2].contains("private_hosts"), "\(answers[2].prefix(300))")
            #expect(answers[3].hasPrefix("HTTP/1.1 403"), "\(answers[3].prefix(300))")
        }
        #expect(opened.requests.map(\.target) == ["/a", "/b"])
        #expect(closed.requests.isEmpty)
    }
}
