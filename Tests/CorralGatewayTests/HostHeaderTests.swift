import CorralCore
import CorralGateway
import CorralPolicy
import Foundation
import TestSupport
import Testing

/// Security review, low finding (Host header): a Host header that is not the request's own target.
@Suite("Host headers against the target")
struct HostHeaderTests {
    /// Security review, low finding (Host header): a request checked against one host carries a Host header
    /// naming another (a virtual host on the same address, say). It is refused, not passed on.
    @Test("a Host header that differs from the target is refused; what is sent on carries the target's")
    func hostHeaderMismatch() async throws {
        let server = try EgressTests.upstream()
        defer { server.stop() }
        let port = try #require(server.port)
        try await GatewayFixture.with { fixture in
            let socket = try await fixture.attach(
                SandboxID(unchecked: "sb-host0001"), policy: GatewayPolicy(egressHosts: ["127.0.0.1:\(port)"]))
            let target = "127.0.0.1:\(port)"
            let answers = try await runOnThread { () -> [String] in
                try [
                    "GET http://\(target)/a HTTP/1.1\r\nHost: admin.internal\r\n\r\n",
                    "GET http://\(target)/b HTTP/1.1\r\nHost: \(target)\r\nHost: admin.internal\r\n\r\n",
                    "POST http://\(target)/c HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Length: 3\r\n\r\nabc",
                    "CONNECT \(target) HTTP/1.1\r\nHost: admin.internal:443\r\n\r\n",
                    "GET http://\(target)/ok HTTP/1.1\r\nHost: \(target)\r\n\r\n",
                    "GET http://\(target)/none HTTP/1.1\r\n\r\n",
                ].map { try TCPClient.exchange(unixSocket: socket, $0) }
            }
            for answer in answers.prefix(4) {
                #expect(answer.hasPrefix("HTTP/1.1 400"), "\(answer.prefix(300))")
                #expect(answer.contains("Host header"), "\(answer.prefix(300))")
            }
            #expect(answers[4].hasPrefix("HTTP/1.1 200"), "\(answers[4].prefix(300))")
            #expect(answers[5].hasPrefix("HTTP/1.1 200"), "\(answers[5].prefix(300))")
        }
        #expect(server.requests.map(\.target) == ["/ok", "/none"])
        #expect(server.requests.allSatisfy { $0.header("Host") == "127.0.0.1:\(port)" })
    }

}
