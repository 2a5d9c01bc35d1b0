import CorralCore
import Foundation
import TestSupport
import Testing

/// `corral port-forward` (issue 15's ports, for corral's own users): a local loopback port
/// reaches a server inside the sandbox, through the service's control connection.
@Suite("Port forwarding on the command line", .engine, .serialized, .timeLimit(.minutes(10)))
struct PortForwardCLITests {
    // Without the forward nothing listens on the local port; without the relay the request
    // gets no answer, or not the sandbox's file.
    @Test("a local port reaches a server in the sandbox; a closed port there ends only that connection")
    func forwardsToSandboxServer() async throws {
        try await ServiceFixture.with { service in
            try await service.start()
            let id = try await InteractiveCLITests.sandbox(service)
            let written = try await service.local([
                "exec", id, "--", "sh", "-c", "mkdir -p /tmp/www && echo forwarded-$((6*7)) > /tmp/www/hello.txt",
            ])
            #expect(written.status == 0, "\(written.stderr)")
            let server = try await service.local([
                "exec", "--detach", id, "--", "python3", "-m", "http.server", "8000", "--bind", "127.0.0.1",
                "--directory", "/tmp/www",
            ])
            #expect(server.status == 0, "\(server.stderr)")

            let forward = try service.localBackground(["port-forward", id, "0:8000"])
            defer { forward.kill() }
            let line = try await onOwnThread {
                try forward.waitForLine("Forwarding from") { $0.hasPrefix("Forwarding from 127.0.0.1:") }
            }
            let port = try #require(
                line.split(separator: " ").dropFirst(2).first?.split(separator: ":").last.flatMap { Int($0) }, "\(line)"
            )
            // The server may take a moment to listen inside the sandbox.
            var body = ""
            for _ in 0..<60 {
                body = try await onOwnThread { Self.get(port: port, path: "/hello.txt") }
                if body.contains("forwarded-42") { break }
                try await Task.sleep(for: .milliseconds(500))
            }
            #expect(body.contains("200") && body.contains("forwarded-42"), "\(body)")
            // Twice more on fresh connections: each is a command of its own.
            for _ in 0..<2 {
                let again = try await onOwnThread { Self.get(port: port, path: "/hello.txt") }
                #expect(again.contains("forwarded-42"), "\(again)")
            }

            let closed = try service.localBackground(["port-forward", id, "0:9"])
            defer { closed.kill() }
            let closedLine = try await onOwnThread {
                try closed.waitForLine("Forwarding from") { $0.hasPrefix("Forwarding from 127.0.0.1:") }
            }
            let closedPort = try #require(
                closedLine.split(separator: " ").dropFirst(2).first?.split(separator: ":").last.flatMap { Int($0) })
            let refused = try await onOwnThread { Self.get(port: closedPort, path: "/") }
            #expect(refused.isEmpty, "nothing listens on port 9 in the sandbox: \(refused)")

            let bad = try await service.local(["port-forward", id, "1:2:3"])
            #expect(bad.status != 0 && bad.stderr.contains("LOCAL:REMOTE"), "\(bad.stderr)")
            let missing = try await service.local(["port-forward", "sb-000000000000", "8000"])
            #expect(missing.status != 0 && missing.stderr.contains("not found"), "\(missing.stderr)")
        }
    }

    /// One HTTP/1.0 GET on 127.0.0.1:`port`; what came back before the server closed (empty when
    /// the connection ended at once).
    static func get(port: Int, path: String) -> String {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return "" }
        defer { close(descriptor) }
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port)).bigEndian
        address.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { return "" }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            received += buffer[..<count]
        }
        return String(decoding: received, as: UTF8.self)
    }
}
