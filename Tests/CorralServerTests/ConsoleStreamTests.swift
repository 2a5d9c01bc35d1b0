import CorralCore
import CorralService
import CorralSession
import Foundation
import ServiceLifecycle
import Synchronization
import Testing

@testable import CorralFleet
@testable import CorralServer

@Suite("Console: the live timeline")
struct ConsoleStreamTests {
    @Test(
        "a burst of 2,000 events reaches the stream whole and in order, resumes after Last-Event-ID, and a stop ends it"
    )
    func burst() async throws {
        try await ConsoleFixture.with { fixture in
            let id = try await fixture.session(of: "tenant-a", [NewEvent(type: "user.message", data: ["text": "go"])])
            let cookie = fixture.server.console.logins.open(
                viewer: .tenant(TenantID(unchecked: "tenant-a")), credentialSHA256: BearerToken.hash(fixture.tokenA)
            ).id
            try await Self.live(fixture) { port in
                let connection = try RawConnection(port: port)
                connection.send(Self.request("/console/sessions/\(id)/stream?from=1", cookie: cookie))
                let first = try await runOnThread { connection.read(until: "data-seq=\"1\"", timeout: 30) }
                #expect(first.contains("HTTP/1.1 200"), "\(first.prefix(300))")
                #expect(first.contains("text/event-stream"))
                let store = fixture.store
                for batch in 0..<20 {
                    let events = (0..<100).map { index in
                        NewEvent(
                            type: "tool.result",
                            data: ["text": .string("<b>\(batch * 100 + index)</b>"), "status": "ok"])
                    }
                    _ = try await store.append(id, events, lease: try await store.currentLease(id), durability: .none)
                }
                let text = try await runOnThread { connection.read(until: "id: 2001\n", timeout: 60) }
                let seqs = Self.seqs(first + text)
                #expect(seqs == Array(1...2001), "missing or out of order: \(seqs.count) rows, last \(seqs.last ?? 0)")
                #expect(!text.contains("<b>"), "event text was sent as markup")
                connection.closeNow()

                // Resuming: the browser sends the last id it saw.
                let again = try RawConnection(port: port)
                again.send(Self.request("/console/sessions/\(id)/stream", cookie: cookie, lastEventID: 1500))
                let resumed = try await runOnThread { again.read(until: "id: 2001\n", timeout: 30) }
                #expect(Self.seqs(resumed) == Array(1501...2001))
                again.closeNow()

                // Another tenant's login gets nothing of it.
                let other = fixture.server.console.logins.open(
                    viewer: .tenant(TenantID(unchecked: "tenant-b")),
                    credentialSHA256: BearerToken.hash(fixture.tokenB)
                ).id
                let foreign = try RawConnection(port: port)
                foreign.send(Self.request("/console/sessions/\(id)/stream", cookie: other))
                let refused = try await runOnThread { foreign.readResponse(timeout: 30) }
                #expect(refused?.status == 404)
                #expect(refused.map { Self.seqs($0.text) } == [])
                foreign.closeNow()

                // A stream left open does not hold up the stop (checked when `live` returns).
                let open = try RawConnection(port: port)
                open.send(Self.request("/console/sessions/\(id)/stream", cookie: cookie))
                _ = try await runOnThread { open.read(until: "retry:", timeout: 30) }
            }
        }
    }

    @Test("a stream ends when its login ends")
    func loginEnds() async throws {
        try await ConsoleFixture.with { fixture in
            let id = try await fixture.session(of: "tenant-a", [])
            var configuration = fixture.server.configuration
            // Idle streams look at their login at each keep-alive: soon, here.
            configuration.streamKeepAlive = .milliseconds(200)
            let server = CorralServer(
                configuration: configuration, runner: fixture.server.runner, tenants: fixture.server.tenants,
                sessions: fixture.server.sessions, logger: fixture.logger)
            try await Self.live(server, logger: fixture) { port in
                let cookie = server.console.logins.open(
                    viewer: .tenant(TenantID(unchecked: "tenant-a")),
                    credentialSHA256: BearerToken.hash(fixture.tokenA)
                ).id
                let connection = try RawConnection(port: port)
                connection.send(Self.request("/console/sessions/\(id)/stream", cookie: cookie))
                _ = try await runOnThread { connection.read(until: "retry:", timeout: 30) }
                server.console.logins.close(cookie)
                // The terminating chunk of the response: the stream ended by itself.
                let rest = try await runOnThread { connection.read(until: "\r\n0\r\n\r\n", timeout: 60) }
                #expect(rest.contains("\r\n0\r\n\r\n"), "the stream is still open: \(rest.suffix(200))")
            }
        }
    }

    // MARK: Helpers

    static func request(_ path: String, cookie: String, lastEventID: Int? = nil) -> String {
        var head =
            "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nCookie: corral_console=\(cookie)\r\n"
        if let lastEventID { head += "Last-Event-ID: \(lastEventID)\r\n" }
        return head + "\r\n"
    }

    /// The rows' seqs, in the order they came.
    static func seqs(_ text: String) -> [Int] {
        var found: [Int] = []
        var rest = text[...]
        while let range = rest.range(of: "data-seq=\"") {
            let digits = rest[range.upperBound...].prefix { $0.isNumber }
            if let number = Int(digits) { found.append(number) }
            rest = rest[range.upperBound...]
        }
        return found
    }

    static func live(_ fixture: ConsoleFixture, _ body: @Sendable (Int) async throws -> Void) async throws {
        try await live(fixture.server, logger: fixture, body)
    }

    /// `server` on a TCP listener, stopped gracefully afterwards; the stop must complete.
    static func live(
        _ server: CorralServer, logger fixture: ConsoleFixture, _ body: @Sendable (Int) async throws -> Void
    )
        async throws
    {
        let port = Mutex<Int?>(nil)
        let (started, continuation) = AsyncStream<Void>.makeStream()
        let listener = server.listener(auth: .tokens, address: .hostname("127.0.0.1", port: 0)) { channel in
            port.withLock { $0 = channel.localAddress?.port }
            continuation.yield()
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: [.init(service: listener)], logger: fixture.logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            for await _ in started { break }
            let bound = try #require(port.withLock { $0 })
            do {
                try await body(bound)
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }
}

extension RawConnection {
    /// What the server sent until `marker` appeared in it, or `timeout` passed, or it closed.
    func read(until marker: String, timeout: TimeInterval) -> String {
        let start = Date()
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        let needle = Array(marker.utf8)
        while Date().timeIntervalSince(start) < timeout {
            if received.count >= needle.count,
                String(decoding: received.suffix(needle.count + 65536), as: UTF8.self).contains(marker)
            {
                break
            }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 100) > 0 else { continue }
            let count = recv(fd, &buffer, buffer.count, 0)
            if count > 0 {
                received.append(contentsOf: buffer[0..<count])
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                break
            }
        }
        return String(decoding: received, as: UTF8.self)
    }
}
