import CorralCore
import CorralGateway
import CorralPolicy
import Dispatch
import Foundation
import TestSupport
import Testing

/// Bad input and abuse: malformed requests and pkt-lines, floods, slow clients, detaching.
@Suite("Gateway under bad input")
struct RobustnessTests {
    let sandbox = SandboxID(unchecked: "sb-robust01")

    @Test("a malformed pkt-line stream is refused with 400, and the gateway keeps serving")
    func malformedPktLine() async throws {
        try await GatewayFixture.with { fixture in
            try fixture.upstream.createRepository(owner: GatewayFixture.owner, name: "rocket")
            try await fixture.storeToken()
            let policy = GatewayPolicy(gitGrants: [
                try GitGrant(repository: fixture.repository("rocket"), access: .write)
            ])
            let socket = try await fixture.attach(sandbox, policy: policy)
            let base = fixture.remote("rocket")
            let bodies = [
                "zzzz this is not a pkt-line", "0001", "00ff short", "0000", "0032" + String(repeating: "a", count: 46),
            ]
            for body in bodies {
                let answer = try await runOnThread {
                    try TCPClient.exchange(
                        unixSocket: socket,
                        "POST \(base)/git-receive-pack HTTP/1.1\r\nHost: git.corral\r\nContent-Type: application/x-git-receive-pack-request\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
                    )
                }
                #expect(answer.hasPrefix("HTTP/1.1 400"), "\(body): \(answer)")
                #expect(
                    answer.contains("malformed receive-pack request") || answer.contains("names no ref"), "\(answer)")
            }
            let advertisement = try await runOnThread {
                try TCPClient.exchange(
                    unixSocket: socket,
                    "GET \(base)/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: git.corral\r\nConnection: close\r\n\r\n"
                )
            }
            #expect(advertisement.hasPrefix("HTTP/1.1 200"), "\(advertisement)")
            #expect(advertisement.contains("# service=git-upload-pack"))
            #expect(!fixture.upstream.requests.contains { $0.target.hasSuffix("git-receive-pack") })
        }
    }

    @Test("malformed HTTP gets a 400 (or 431) and a closed connection, never a crash")
    func malformedHTTP() async throws {
        try await GatewayFixture.with { fixture in
            try fixture.upstream.createRepository(owner: GatewayFixture.owner, name: "rocket")
            try await fixture.storeToken()
            let policy = GatewayPolicy(gitGrants: [
                try GitGrant(repository: fixture.repository("rocket"), access: .read)
            ])
            let socket = try await fixture.attach(sandbox, policy: policy)
            let cases: [(String, String)] = [
                ("NONSENSE\r\n\r\n", "HTTP/1.1 400"),
                ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400"),
                ("GET http://git.corral/../../etc/passwd HTTP/1.1\r\n\r\n", "HTTP/1.1 400"),
                ("GET http://git.corral/h/o/r.git/objects/info/packs HTTP/1.1\r\n\r\n", "HTTP/1.1 404"),
                ("GET http://a/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "HTTP/1.1 400"),
                ("\u{0}\u{1}\u{2}\u{3}\r\n\r\n", "HTTP/1.1 400"),
                ("GET http://a/ HTTP/1.1\r\nX: " + String(repeating: "a", count: 70_000) + "\r\n\r\n", "HTTP/1.1 431"),
                (
                    "POST \(fixture.remote("rocket"))/git-upload-pack HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                    "HTTP/1.1 400"
                ),
            ]
            for (request, status) in cases {
                let answer = try await runOnThread { try TCPClient.exchange(unixSocket: socket, request) }
                #expect(answer.hasPrefix(status), "\(request.prefix(60)): \(answer.prefix(200))")
            }
            let fine = try await runOnThread {
                try TCPClient.exchange(
                    unixSocket: socket,
                    "GET \(fixture.remote("rocket"))/info/refs?service=git-upload-pack HTTP/1.1\r\nConnection: close\r\n\r\n"
                )
            }
            #expect(fine.hasPrefix("HTTP/1.1 200"))
            #expect(fixture.sink.decisions(for: sandbox).contains { $0.action == .badRequest })
        }
    }

    @Test("a flood of connections is bounded per sandbox, while another sandbox still gets through")
    func floodBoundedPerSandbox() async throws {
        let limit = 8
        // A host that holds every request until released, so that held connections are
        // known to be admitted (their requests arrived) before the flood starts.
        let arrived = DispatchSemaphore(value: 0)
        let proceed = DispatchSemaphore(value: 0)
        let slow = try StubHTTPServer(loopbackHandler: { _, connection in
            arrived.signal()
            proceed.wait()
            connection.respond(status: 200, headers: ["Connection": "close"], body: Array("slow\n".utf8))
            return false
        })
        defer {
            for _ in 0..<limit { proceed.signal() }  // never leave a handler waiting
            slow.stop()
        }
        let fast = try EgressTests.upstream()
        defer { fast.stop() }
        let slowPort = try #require(slow.port)
        let fastPort = try #require(fast.port)
        try await GatewayFixture.with(configure: { $0.maxConnectionsPerSandbox = limit }) { fixture in
            let policy = GatewayPolicy(egressHosts: ["127.0.0.1"])
            let flooder = try await fixture.attach(sandbox, policy: policy)
            let other = SandboxID(unchecked: "sb-robust02")
            let quiet = try await fixture.attach(other, policy: policy)

            let held = try await runOnThread { () -> [Int32] in
                let fds = try (0..<limit).map { _ in
                    let fd = try TCPClient.connect(unixSocket: flooder)
                    TCPClient.send(fd, "GET http://127.0.0.1:\(slowPort)/held HTTP/1.1\r\nConnection: close\r\n\r\n")
                    return fd
                }
                for _ in 0..<limit where arrived.wait(timeout: .now() + 30) == .timedOut {
                    throw CorralError(.timeout, "the held requests did not reach the upstream")
                }
                return fds
            }
            // Every slot is taken: the next connections are closed at once, unanswered.
            let refused = try await runOnThread { () -> [Bool] in
                try (0..<20).map { _ in
                    let fd = try TCPClient.connect(unixSocket: flooder)
                    defer { close(fd) }
                    TCPClient.send(fd, "GET http://127.0.0.1:\(fastPort)/extra HTTP/1.1\r\nConnection: close\r\n\r\n")
                    return TCPClient.closedWithoutAnswer(fd)
                }
            }
            #expect(refused.allSatisfy { $0 })

            // The other sandbox is served as usual meanwhile.
            let answer = try await runOnThread {
                try TCPClient.exchange(
                    unixSocket: quiet, "GET http://127.0.0.1:\(fastPort)/other HTTP/1.1\r\nConnection: close\r\n\r\n")
            }
            #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer)")

            // Once the held requests finish, the flooder is served again.
            let finished = try await runOnThread { () -> [String] in
                for _ in 0..<limit { proceed.signal() }
                return held.map { fd in
                    defer { close(fd) }
                    return TCPClient.readAll(fd)
                }
            }
            #expect(finished.allSatisfy { $0.hasPrefix("HTTP/1.1 200") })
            // One decision for the flood, not one per refused connection.
            let limits = fixture.sink.decisions(for: sandbox).filter { $0.action == .connectionLimit }
            #expect(limits.count == 1)

            // The gateway frees a slot when it sees its connection close, just after the client
            // read the answer: the flooder is served again within moments, not necessarily at once.
            let again = try await retrying(for: .seconds(30)) {
                let answer = try await runOnThread {
                    try TCPClient.exchange(
                        unixSocket: flooder,
                        "GET http://127.0.0.1:\(fastPort)/again HTTP/1.1\r\nConnection: close\r\n\r\n")
                }
                guard answer.hasPrefix("HTTP/1.1 200") else {
                    throw CorralError(.unavailable, "not served yet: \(answer.prefix(80))")
                }
                return answer
            }
            #expect(again.hasPrefix("HTTP/1.1 200"), "\(again)")
            #expect(fixture.sink.decisions(for: other).allSatisfy { $0.action != .connectionLimit })
        }
    }

    @Test("a client that never finishes its request head is cut off by the header timeout")
    func headerTimeout() async throws {
        try await GatewayFixture.with(configure: { $0.headerTimeout = .milliseconds(200) }) { fixture in
            let socket = try await fixture.attach(sandbox, policy: GatewayPolicy())
            let closed = try await runOnThread { () -> Bool in
                let fd = try TCPClient.connect(unixSocket: socket)
                defer { close(fd) }
                TCPClient.send(fd, "GET http://example.com/ HTTP/1.1\r\nHost: exa")
                return TCPClient.readAll(fd).isEmpty
            }
            #expect(closed)
        }
    }

    @Test("detaching closes the sandbox's socket and removes its file; other sandboxes stay")
    func detach() async throws {
        try await GatewayFixture.with { fixture in
            let socket = try await fixture.attach(sandbox, policy: GatewayPolicy())
            let other = SandboxID(unchecked: "sb-robust03")
            let otherSocket = try await fixture.attach(other, policy: GatewayPolicy())
            #expect(fixture.gateway.attachedSandboxes == [sandbox, other])
            do {
                try await fixture.attach(sandbox, policy: GatewayPolicy())
                Issue.record("a second attach of one sandbox was accepted")
            } catch let error as CorralError {
                #expect(error.code == .alreadyExists)
            }
            let attributes = try FileManager.default.attributesOfItem(atPath: socket)
            #expect((attributes[.posixPermissions] as? Int) == 0o666)

            let held = try await runOnThread { try TCPClient.connect(unixSocket: socket) }
            fixture.gateway.detach(sandbox: sandbox)
            #expect(!FileManager.default.fileExists(atPath: socket))
            let heldClosed = try await runOnThread { TCPClient.readAll(held).isEmpty }
            #expect(heldClosed)
            close(held)
            #expect(throws: CorralError.self) { try TCPClient.connect(unixSocket: socket) }

            let answer = try await runOnThread {
                try TCPClient.exchange(
                    unixSocket: otherSocket, "GET http://example.com/ HTTP/1.1\r\nConnection: close\r\n\r\n")
            }
            #expect(answer.hasPrefix("HTTP/1.1 403"), "\(answer)")
            #expect(fixture.gateway.attachedSandboxes == [other])
        }
    }
}
