import CorralCore
import CorralGateway
import CorralPolicy
import Foundation
import TestSupport
import Testing

/// Security review, "How" (the parser on NIOHTTP1): the gateway's HTTP/1.1 parsing is NIOHTTP1's decoder; what the
/// hand-written parser did, it still does.
@Suite("HTTP parsing on NIOHTTP1")
struct HTTPParsingTests {
    /// Security review, "How" (the parser moved onto NIOHTTP1): bytes a client sends right
    /// behind its CONNECT head belong to the tunnel, not to the HTTP decoder.
    @Test("bytes sent right behind a CONNECT head go through the tunnel")
    func connectWithEarlyBytes() async throws {
        let server = try EgressTests.upstream()
        defer { server.stop() }
        let port = try #require(server.port)
        try await GatewayFixture.with { fixture in
            let socket = try await fixture.attach(
                SandboxID(unchecked: "sb-tunl0001"), policy: GatewayPolicy(egressHosts: ["127.0.0.1:\(port)"]))
            let answer = try await runOnThread {
                try TCPClient.exchange(
                    unixSocket: socket,
                    "CONNECT 127.0.0.1:\(port) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n\r\nGET /early HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
            }
            #expect(answer.hasPrefix("HTTP/1.1 200 Connection Established"), "\(answer.prefix(300))")
            #expect(answer.contains("hello GET /early 0"), "\(answer.prefix(300))")
        }
        #expect(server.requests.map(\.target) == ["/early"])
    }

    /// Security review, "How" (the parser on NIOHTTP1): body limits hold with NIOHTTP1 framing, by Content-Length
    /// (refused at once) and chunked (refused past the limit), and the gateway carries on.
    @Test("git request bodies over the limit get 413 in either framing")
    func bodyLimits() async throws {
        try await GatewayFixture.with(configure: { $0.maxFetchRequestBytes = 1024 }) { fixture in
            try fixture.upstream.createRepository(owner: GatewayFixture.owner, name: "rocket")
            try await fixture.storeToken()
            let socket = try await fixture.attach(
                SandboxID(unchecked: "sb-limit001"),
                policy: GatewayPolicy(gitGrants: [try GitGrant(repository: fixture.repository("rocket"), access: .read)]
                ))
            let url = "\(fixture.remote("rocket"))/git-upload-pack"
            let chunk = String(repeating: "a", count: 600)
            let answers = try await runOnThread { () -> [String] in
                [
                    try TCPClient.exchange(
                        unixSocket: socket,
                        "POST \(url) HTTP/1.1\r\nHost: git.corral\r\nContent-Type: application/x-git-upload-pack-request\r\nContent-Length: 4096\r\n\r\n"
                    ),
                    try TCPClient.exchange(
                        unixSocket: socket,
                        "POST \(url) HTTP/1.1\r\nHost: git.corral\r\nContent-Type: application/x-git-upload-pack-request\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n\(chunk)\r\n258\r\n\(chunk)\r\n0\r\n\r\n"
                    ),
                ]
            }
            for answer in answers { #expect(answer.hasPrefix("HTTP/1.1 413"), "\(answer.prefix(300))") }
            #expect(!fixture.upstream.requests.contains { $0.target.hasSuffix("git-upload-pack") })
        }
    }
}
