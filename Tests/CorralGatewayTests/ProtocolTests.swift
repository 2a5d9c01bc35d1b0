import CorralCore
import CorralPolicy
import Foundation
import Logging
import NIOCore
import TestSupport
import Testing

@testable import CorralGateway

@Suite("Git and proxy protocol parsing")
struct ProtocolTests {
    static let zero = String(repeating: "0", count: 40)
    static let a = String(repeating: "a", count: 40)
    static let b = String(repeating: "b", count: 40)

    func pkt(_ text: String) -> [UInt8] { PktLine.encode(text) }

    @Test("receive-pack commands, capabilities and the pack's offset are read")
    func parsesCommands() throws {
        let pack = Array("PACK....".utf8)
        let body =
            pkt("shallow \(Self.a)\n")
            + pkt("\(Self.a) \(Self.b) refs/heads/corral/x\0report-status side-band-64k agent=git/2\n")
            + pkt("\(Self.zero) \(Self.a) refs/heads/new\n") + PktLine.flush + pack
        let parsed = try ReceivePackRequest.parse(body, complete: true)
        #expect(parsed.commands.map(\.ref) == ["refs/heads/corral/x", "refs/heads/new"])
        #expect(parsed.commands[1].isCreate)
        #expect(parsed.capabilities.contains("side-band-64k"))
        #expect(parsed.packOffset == body.count - pack.count)
    }

    @Test("push options are skipped to find the pack")
    func pushOptions() throws {
        let body =
            pkt("\(Self.a) \(Self.b) refs/heads/x\0report-status push-options\n") + PktLine.flush + pkt("ci.skip\n")
            + PktLine.flush + Array("PACK".utf8)
        let parsed = try ReceivePackRequest.parse(body, complete: true)
        #expect(parsed.packOffset == body.count - 4)
    }

    @Test("malformed pkt-lines are refused, not trusted")
    func malformed() {
        let cases: [(String, [UInt8])] = [
            ("not hex", Array("zzzz garbage".utf8)),
            ("cut short", Array("00ff\(Self.a)".utf8)),
            ("special packet", Array("0001".utf8)),
            ("too long", Array("ffff".utf8) + [UInt8](repeating: 0x61, count: 70000)),
            ("two fields", pkt("\(Self.a) refs/heads/x\n") + PktLine.flush),
            ("bad object id", pkt("\(Self.a) xyz refs/heads/x\n") + PktLine.flush),
            ("mixed id lengths", pkt("\(Self.a) \(String(repeating: "b", count: 64)) refs/heads/x\n") + PktLine.flush),
            ("ref outside refs/", pkt("\(Self.a) \(Self.b) HEAD\n") + PktLine.flush),
            ("no commands", PktLine.flush),
            ("no flush", pkt("\(Self.a) \(Self.b) refs/heads/x\n")),
        ]
        for (name, body) in cases {
            #expect(throws: ReceivePackRequest.ParseError.self, "\(name)") {
                try ReceivePackRequest.parse(body, complete: true)
            }
        }
        #expect(throws: ReceivePackRequest.ParseError.needMore) {
            try ReceivePackRequest.parse(pkt("\(Self.a) \(Self.b) refs/heads/x\n"), complete: false)
        }
        #expect(throws: ReceivePackRequest.ParseError.self) {
            try ReceivePackRequest.parse(pkt("push-cert\0report-status\n") + PktLine.flush, complete: true)
        }
    }

    @Test("a refusal report is side-band framed with the reasons on channel 2")
    func refusalReport() throws {
        let report = PktLine.refusalReport(
            refusals: [(ref: "refs/heads/main", reason: "not pushable")],
            capabilities: ["report-status", "side-band-64k"],
            messages: ["corral gateway: refused refs/heads/main"])
        let text = String(decoding: report, as: UTF8.self)
        #expect(text.contains("\u{2}corral gateway: refused refs/heads/main\n"))
        #expect(text.contains("\u{1}000eunpack ok\n"))
        #expect(text.contains("ng refs/heads/main not pushable\n"))
        #expect(text.hasSuffix("0000"))
        let plain = String(
            decoding: PktLine.refusalReport(
                refusals: [(ref: "refs/heads/x", reason: "no")], capabilities: [], messages: []), as: UTF8.self)
        #expect(plain == "000eunpack ok\n0017ng refs/heads/x no\n0000")
    }

    @Test("repositories are HOST/OWNER/REPO with no way out of a path")
    func repositories() throws {
        let parsed = try GitRepository(parsing: "http://git.corral/GitHub.com/apple/swift.git")
        #expect(parsed.description == "github.com/apple/swift")
        #expect(parsed.upstreamBaseURL == "https://github.com/apple/swift.git")
        #expect(parsed.gatewayRemoteURL == "http://git.corral/github.com/apple/swift.git")
        #expect(try GitRepository(parsing: "127.0.0.1:8080/o/r").upstreamBaseURL == "http://127.0.0.1:8080/o/r.git")
        #expect(try GitRepository(parsing: "[::1]:8080/o/r").isLoopbackHost)
        #expect(try !GitRepository(parsing: "127.example.com/o/r").isLoopbackHost)
        for bad in [
            "github.com/apple", "github.com/../x", "github.com/a/b/c", "github.com/a/b c", "ftp://h/o/r", "h/o/..",
        ] {
            #expect(throws: CorralError.self, "\(bad)") { try GitRepository(parsing: bad) }
        }
    }

    @Test("git.corral paths map to smart-HTTP requests; other paths are refused")
    func gitRequests() throws {
        let refs = try GitRequest(method: "GET", pathAndQuery: "/127.0.0.1:9/o/r.git/info/refs?service=git-upload-pack")
        #expect(refs.service == .uploadPack)
        #expect(refs.upstreamPath == "/o/r.git/info/refs?service=git-upload-pack")
        let push = try GitRequest(method: "POST", pathAndQuery: "/h.example/o/r/git-receive-pack")
        #expect(push.service == .receivePack && push.kind == .rpc)
        #expect(throws: HTTPFailure.self) { try GitRequest(method: "GET", pathAndQuery: "/h/o/r.git/info/refs") }
        #expect(throws: HTTPFailure.self) {
            try GitRequest(method: "GET", pathAndQuery: "/h/o/r.git/objects/info/packs")
        }
        #expect(throws: HTTPFailure.self) {
            try GitRequest(method: "GET", pathAndQuery: "/h/o/%2e%2e/info/refs?service=git-upload-pack")
        }
        #expect(throws: HTTPFailure.self) { try GitRequest(method: "DELETE", pathAndQuery: "/h/o/r/git-receive-pack") }
    }

    @Test("the egress allow-list matches hosts, ports and subdomain wildcards")
    func egressMatching() {
        let policy = GatewayPolicy(egressHosts: ["pypi.org", "files.example.com:8443", "*.debian.org", "[::1]:80"])
        #expect(policy.allowsEgress(host: "pypi.org", port: 443))
        #expect(policy.allowsEgress(host: "PyPI.org", port: 80))
        #expect(!policy.allowsEgress(host: "evil-pypi.org", port: 443))
        #expect(policy.allowsEgress(host: "files.example.com", port: 8443))
        #expect(!policy.allowsEgress(host: "files.example.com", port: 443))
        #expect(policy.allowsEgress(host: "deb.debian.org", port: 80))
        #expect(!policy.allowsEgress(host: "debian.org", port: 80))
        #expect(!policy.allowsEgress(host: "debian.org.evil.com", port: 80))
        #expect(policy.allowsEgress(host: "::1", port: 80))
        #expect(!GatewayPolicy().allowsEgress(host: "pypi.org", port: 443))
    }

    @Test("loopback, private, link-local and mapped addresses count as internal")
    func internalAddresses() throws {
        for text in [
            "127.0.0.1", "10.1.2.3", "172.20.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1",
            "fe80::1", "fd00::1", "::ffff:127.0.0.1",
        ] {
            #expect(EgressAddress.isInternal(try SocketAddress(ipAddress: text, port: 80)), "\(text)")
        }
        for text in ["93.184.216.34", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            #expect(!EgressAddress.isInternal(try SocketAddress(ipAddress: text, port: 80)), "\(text)")
        }
        #expect(EgressAddress.isLiteral("127.0.0.1") && EgressAddress.isLiteral("::1"))
        #expect(!EgressAddress.isLiteral("localhost"))
    }

    @Test("mirrors are kept per tenant, so one tenant's cache never serves another's grant")
    func mirrorsPerTenant() throws {
        let mirrors = GitMirrors(
            configuration: Gateway.Configuration(workDirectory: URL(fileURLWithPath: "/w")), logger: Logger(label: "t"))
        let repository = try GitRepository(parsing: "github.com/acme/rocket")
        let one = mirrors.mirrorDirectory(tenant: try TenantID(validating: "tn-one"), repository: repository)
        let two = mirrors.mirrorDirectory(tenant: try TenantID(validating: "tn-two"), repository: repository)
        #expect(one != two)
        #expect(one.path.hasPrefix("/w/mirrors/tn-one/"))
        #expect(two.path.hasPrefix("/w/mirrors/tn-two/"))
    }

    @Test("grants: write beats read for one repository; the default pushable branch is the sandbox's own")
    func grants() throws {
        let sandbox = try SandboxID(validating: "sb-abc")
        let policy = GatewayPolicy(gitGrants: [
            try GitGrant(repository: "h.example/o/r", access: .read),
            try GitGrant(repository: "h.example/o/r", access: .write),
        ])
        let grant = try #require(policy.grant(for: try GitRepository(parsing: "h.example/o/r")))
        #expect(grant.access == .write)
        #expect(grant.branches(for: sandbox) == ["corral/sb-abc"])
        #expect(try GitGrant(repository: "h.example/o/r", access: .read).branches(for: sandbox).isEmpty)
    }

    @Test("request heads: bad framing and malformed lines are refused by the decoder, and answered")
    func requestHeads() async throws {
        try await GatewayFixture.with { fixture in
            let socket = try await fixture.attach(SandboxID(unchecked: "sb-heads001"), policy: GatewayPolicy())
            let cases: [(String, String)] = [
                ("GET http://a/\r\n\r\n", "HTTP/1.1 505"),
                // llhttp reads repeated spaces as one; the target is unambiguous and judged as usual.
                ("GET  http://a/ HTTP/1.1\r\n\r\n", "HTTP/1.1 403"),
                ("GET http://a/ HTTP/2.0\r\n\r\n", "HTTP/1.1 505"),
                ("G(T http://a/ HTTP/1.1\r\n\r\n", "HTTP/1.1 400"),
                ("GET http://a/ HTTP/1.1\r\n folded: x\r\n\r\n", "HTTP/1.1 400"),
                ("GET http://a/ HTTP/1.1\r\nNoColon\r\n\r\n", "HTTP/1.1 400"),
                ("GET http://a/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "HTTP/1.1 400"),
                ("GET http://a/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.1 400"),
                ("GET http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "HTTP/1.1 501"),
                ("GET http://a/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "HTTP/1.1 400"),
                ("GET http://a/" + String(repeating: "p", count: 70_000) + " HTTP/1.1\r\n\r\n", "HTTP/1.1 431"),
            ]
            for (request, status) in cases {
                let answer = try await runOnThread { try TCPClient.exchange(unixSocket: socket, request) }
                #expect(answer.hasPrefix(status), "\(request.prefix(60)): \(answer.prefix(200))")
            }
        }
    }

    @Test("dial policy: a network tenant is refused every internal address, in any spelling; the operator opens one")
    func dialPolicy() async throws {
        // Security review finding 2.
        let network = TenantID(unchecked: "tn-net")
        let policy = try DialPolicy(privateHosts: ["127.0.0.1:8080", "git.internal:9418", "[::1]:8443"])
        for host in [
            "127.0.0.1", "127.1", "0x7f.0.0.1", "2130706433", "017700000001", "[::1]", "[::ffff:127.0.0.1]", "::1",
            "localhost", "0", "0.0.0.0", "10.0.0.1", "169.254.169.254", "100.64.0.1", "[fe80::1]",
        ] {
            await #expect(throws: CorralError.self, "\(host)") {
                _ = try await policy.resolve(host: host, port: 81, tenant: network)
            }
        }
        // The one opened: by address, whatever the spelling; by port exactly.
        #expect(try await policy.resolve(host: "127.1", port: 8080, tenant: network).address == "127.0.0.1")
        #expect(try await policy.resolve(host: "localhost", port: 8080, tenant: network).address == "127.0.0.1")
        #expect(try await policy.resolve(host: "[::1]", port: 8443, tenant: network).address == "::1")
        // The operator's own sandboxes: literals yes, names that resolve inside no.
        #expect(try await policy.resolve(host: "127.0.0.1", port: 81, tenant: .local).address == "127.0.0.1")
        await #expect(throws: CorralError.self) {
            _ = try await policy.resolve(host: "localhost", port: 81, tenant: .local)
        }
        do {
            _ = try await policy.resolve(host: "0x7f.0.0.1", port: 81, tenant: network)
        } catch let error as CorralError {
            #expect(error.code == .permissionDenied)
            #expect(error.message.contains("private_hosts"), "\(error.message)")
        }
        for bad in ["127.0.0.1", "*.internal:80", "127.1:80", "http://a:80", "a:0"] {
            #expect(throws: CorralError.self, "\(bad)") { _ = try DialPolicy(privateHosts: [bad]) }
        }
        // Early refusal of allow-list entries that are themselves internal.
        #expect(throws: CorralError.self) { try policy.checkEgressEntry("2130706433:81", tenant: network) }
        #expect(throws: CorralError.self) { try policy.checkEgressEntry("localhost", tenant: network) }
        try policy.checkEgressEntry("127.0.0.1:8080", tenant: network)
        try policy.checkEgressEntry("pypi.org", tenant: network)
        try policy.checkEgressEntry("127.0.0.1:81", tenant: .local)
    }

    @Test("push branches: the sandbox's own, the table's names and prefixes, and anything for the local tenant")
    func pushBranchRules() throws {
        // Security review finding 1.
        let tenant = TenantID(unchecked: "tn-push")
        let sandbox = SandboxID(unchecked: "sb-push001")
        let rules = try PushBranchRules([tenant: ["release/*", "docs"]])
        #expect(rules.allows(tenant: tenant, branch: "corral/sb-push001", sandbox: sandbox))
        #expect(!rules.allows(tenant: tenant, branch: "corral/sb-other", sandbox: sandbox))
        #expect(!rules.allows(tenant: tenant, branch: "corral/sb-push001", sandbox: nil))
        #expect(rules.allows(tenant: tenant, branch: "release/1.2", sandbox: nil))
        #expect(!rules.allows(tenant: tenant, branch: "release/", sandbox: nil))
        #expect(rules.allows(tenant: tenant, branch: "docs", sandbox: sandbox))
        #expect(!rules.allows(tenant: tenant, branch: "main", sandbox: sandbox))
        #expect(!rules.allows(tenant: TenantID(unchecked: "tn-other"), branch: "docs", sandbox: nil))
        #expect(rules.allows(tenant: .local, branch: "main", sandbox: nil))
        for bad in ["", "a*b", "refs/heads/main", "-x", "a..b"] {
            #expect(throws: CorralError.self, "\(bad)") { _ = try PushBranchRules([tenant: [bad]]) }
        }
    }

    @Test("admission: what the gateway would refuse a tenant is refused before anything is made")
    func admission() async throws {
        // Security review findings 1 and 2.
        try await GatewayFixture.with(configure: {
            $0.pushBranches = (try? PushBranchRules([TenantID(unchecked: "tn-ok"): ["main"]])) ?? PushBranchRules()
        }) { fixture in
            let network = TenantID(unchecked: "tn-net")
            let main = GatewayPolicy(gitGrants: [
                try GitGrant(repository: "github.com/acme/rocket", access: .write, pushableBranches: ["main"])
            ])
            do {
                try await fixture.gateway.admit(tenant: network, sandbox: nil, policy: main)
                Issue.record("a network tenant was admitted to push main")
            } catch let error as CorralError {
                #expect(error.code == .permissionDenied)
                #expect(error.message.contains("[gateway.push_branches]"), "\(error.message)")
            }
            try await fixture.gateway.admit(tenant: .local, sandbox: nil, policy: main)
            let loopback = GatewayPolicy(gitGrants: [try GitGrant(repository: "127.0.0.1:9/acme/rocket", access: .read)]
            )
            do {
                try await fixture.gateway.admit(tenant: network, sandbox: nil, policy: loopback)
                Issue.record("a network tenant was admitted to a repository on loopback")
            } catch let error as CorralError {
                #expect(error.code == .permissionDenied)
                #expect(error.message.contains("repository 127.0.0.1:9/acme/rocket is refused"), "\(error.message)")
            }
            try await fixture.gateway.admit(tenant: .local, sandbox: nil, policy: loopback)
            await #expect(throws: CorralError.self) {
                try await fixture.gateway.admit(
                    tenant: network, sandbox: nil, policy: GatewayPolicy(egressHosts: ["0x7f.0.0.1:8420"]))
            }
        }
    }
}
