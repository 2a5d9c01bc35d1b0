import CorralCore
import CorralGateway
import CorralPolicy
import Foundation
import TestSupport
import Testing

/// Everything that is not git: allowed only to hosts on the sandbox's allow-list. A loopback
/// HTTP server stands in for both an allowed and a denied host (`127.0.0.1` is listed,
/// `localhost` is not).
@Suite("Egress allow-list")
struct EgressTests {
    let sandbox = SandboxID(unchecked: "sb-egress01")

    static func upstream() throws -> StubHTTPServer {
        try StubHTTPServer(loopbackHandler: { request, connection in
            connection.respond(
                status: 200, headers: ["Content-Type": "text/plain", "Connection": "close"],
                body: Array("hello \(request.method) \(request.target) \(request.body.count)\n".utf8))
            return false
        })
    }

    @Test("an allowed host is reachable by plain HTTP and by CONNECT; any other is denied with 403 and a reason")
    func allowAndDeny() async throws {
        let server = try Self.upstream()
        defer { server.stop() }
        let port = try #require(server.port)
        try await GatewayFixture.with { fixture in
            let policy = GatewayPolicy(egressHosts: ["127.0.0.1:\(port)"])
            let answers = try await fixture.withSandbox(sandbox, policy: policy) { proxy in
                try await Self.talk(proxyPort: proxy.port, upstreamPort: port)
            }
            #expect(answers.allowed.hasPrefix("HTTP/1.1 200"), "\(answers.allowed)")
            #expect(answers.allowed.contains("hello GET /hello?x=1 0"))
            #expect(answers.posted.contains("hello POST /form 8"), "\(answers.posted)")
            #expect(answers.denied.hasPrefix("HTTP/1.1 403"), "\(answers.denied)")
            #expect(answers.denied.contains("egress to localhost:\(port) is denied"))
            #expect(answers.established.hasPrefix("HTTP/1.1 200"), "\(answers.established)")
            #expect(answers.tunnelled.contains("hello GET /through 0"), "\(answers.tunnelled)")
            for refused in answers.refusedConnects {
                #expect(refused.hasPrefix("HTTP/1.1 403"), "\(refused)")
            }
            let decisions = fixture.sink.decisions(for: sandbox).filter { $0.action == .egress }
            #expect(decisions.contains { $0.verdict == .allowed && $0.target == "127.0.0.1:\(port)" })
            #expect(decisions.contains { $0.verdict == .denied && $0.target == "localhost:\(port)" })
            #expect(fixture.logs.all.contains { $0.contains("verdict=denied") && $0.contains("localhost:\(port)") })
        }
        #expect(!server.requests.contains { $0.header("Host") == "localhost" })
    }

    struct Answers: Sendable {
        var allowed = ""
        var posted = ""
        var denied = ""
        var established = ""
        var tunnelled = ""
        var refusedConnects: [String] = []
    }

    /// The exchanges of `allowAndDeny`, made on a thread of their own (blocking sockets).
    static func talk(proxyPort: Int, upstreamPort port: Int) async throws -> Answers {
        try await runOnThread {
            var answers = Answers()
            answers.allowed = try TCPClient.exchange(
                port: proxyPort, "GET http://127.0.0.1:\(port)/hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n\r\n")
            answers.posted = try TCPClient.exchange(
                port: proxyPort,
                "POST http://127.0.0.1:\(port)/form HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\n123\r\n0\r\n\r\n"
            )
            answers.denied = try TCPClient.exchange(
                port: proxyPort, "GET http://localhost:\(port)/hello HTTP/1.1\r\nHost: localhost:\(port)\r\n\r\n")
            let fd = try TCPClient.connect(port: proxyPort)
            TCPClient.send(fd, "CONNECT 127.0.0.1:\(port) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n\r\n")
            answers.established = TCPClient.read(fd, until: "\r\n\r\n")
            TCPClient.send(fd, "GET /through HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answers.tunnelled = TCPClient.readAll(fd)
            close(fd)
            for target in ["localhost:\(port)", "git.corral:443", "127.0.0.1:1"] {
                answers.refusedConnects.append(
                    try TCPClient.exchange(port: proxyPort, "CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n\r\n"))
            }
            return answers
        }
    }

    @Test("an allow-listed name that resolves to an internal address is refused; the literal address is not")
    func internalAddresses() async throws {
        let server = try Self.upstream()
        defer { server.stop() }
        let port = try #require(server.port)
        try await GatewayFixture.with { fixture in
            let socket = try await fixture.attach(
                sandbox, policy: GatewayPolicy(egressHosts: ["localhost:\(port)", "127.0.0.1:\(port)"]))
            let answers = try await runOnThread { () -> [String] in
                [
                    try TCPClient.exchange(
                        unixSocket: socket, "GET http://localhost:\(port)/x HTTP/1.1\r\nHost: localhost:\(port)\r\n\r\n"
                    ),
                    try TCPClient.exchange(unixSocket: socket, "CONNECT localhost:\(port) HTTP/1.1\r\n\r\n"),
                    try TCPClient.exchange(
                        unixSocket: socket, "GET http://127.0.0.1:\(port)/y HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n\r\n"
                    ),
                ]
            }
            #expect(answers[0].hasPrefix("HTTP/1.1 403"), "\(answers[0])")
            #expect(answers[0].contains("resolves to the internal address 127.0.0.1"), "\(answers[0])")
            #expect(answers[1].hasPrefix("HTTP/1.1 403"), "\(answers[1])")
            #expect(answers[2].hasPrefix("HTTP/1.1 200"), "\(answers[2])")
            let denied = fixture.sink.decisions(for: sandbox).filter { $0.verdict == .denied }
            #expect(denied.count == 2)
            #expect(
                !fixture.sink.decisions(for: sandbox).contains {
                    $0.verdict == .allowed && $0.target == "localhost:\(port)"
                })
        }
        #expect(server.requests.map(\.target) == ["/y"])
    }

    @Test("https through the proxy must use CONNECT; git.corral is not a general-purpose host")
    func httpsWithoutConnect() async throws {
        try await GatewayFixture.with { fixture in
            let socket = try await fixture.attach(sandbox, policy: GatewayPolicy(egressHosts: ["example.com"]))
            let answer = try await runOnThread {
                try TCPClient.exchange(
                    unixSocket: socket, "GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
            }
            #expect(answer.hasPrefix("HTTP/1.1 400"), "\(answer)")
            #expect(answer.contains("CONNECT"))
        }
    }
}
