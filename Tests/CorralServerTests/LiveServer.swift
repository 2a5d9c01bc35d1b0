import CorralCore
import CorralServer
import Foundation
import ServiceLifecycle
import Synchronization
import Testing

/// The fixture's server on real listeners, as corrald runs them (`CorralServer.listener`):
/// TCP on a free loopback port with tokens, and a unix socket in the state directory for the
/// local tenant, both behind the connection guard.
struct LiveServer: Sendable {
    let server: CorralServer
    let port: Int
    let socketPath: String
    /// `http://127.0.0.1:PORT` where workers dial in, when the configuration has `workers`.
    let workerURL: String?

    /// Runs `body` against a live server made from the fixture's with `configure`'s settings,
    /// then stops it gracefully and checks that the stop completes.
    static func with(
        _ fixture: ServerFixture, configure: (inout CorralServer.Configuration) -> Void = { _ in },
        _ body: @Sendable (LiveServer) async throws -> Void
    ) async throws {
        var configuration = fixture.server.configuration
        configure(&configuration)
        let server = CorralServer(
            configuration: configuration, runner: fixture.server.runner, tenants: fixture.server.tenants,
            sessions: fixture.server.sessions, brainEnvironment: fixture.server.brainEnvironment)
        let socketPath = fixture.state.appendingPathComponent("live-\(UUID().uuidString.prefix(6)).sock").path
        let ready = Mutex<(port: Int?, unix: Bool, workers: String?)>((nil, false, nil))
        let (started, continuation) = AsyncStream<Void>.makeStream()
        let tcp = server.listener(auth: .tokens, address: .hostname("127.0.0.1", port: 0)) { channel in
            ready.withLock { $0.port = channel.localAddress?.port }
            continuation.yield()
        }
        let unix = server.listener(auth: .local, address: .unixDomainSocket(path: socketPath)) { _ in
            ready.withLock { $0.unix = true }
            continuation.yield()
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: tcp), .init(service: unix)]
        if let workers = server.workerListener(onReady: { url in
            ready.withLock { $0.workers = url }
            continuation.yield()
        }) {
            services.append(.init(service: workers))
        }
        let wantsWorkers = configuration.workers != nil
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: services, logger: .init(label: "live-server")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                // A listener that fails to start (a port taken meanwhile) ends the wait below too.
                defer { continuation.finish() }
                try await group.run()
            }
            for await _ in started
            where ready.withLock({ $0.port != nil && $0.unix && ($0.workers != nil || !wantsWorkers) }) { break }
            guard ready.withLock({ $0.port != nil && $0.unix && ($0.workers != nil || !wantsWorkers) }) else {
                try await tasks.waitForAll()
                throw CorralError(.unavailable, "the live server stopped before all its listeners were up")
            }
            let port = try #require(ready.withLock { $0.port })
            do {
                try await body(
                    LiveServer(
                        server: server, port: port, socketPath: socketPath, workerURL: ready.withLock { $0.workers }))
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    /// A raw connection to the TCP listener.
    func connect() throws -> RawConnection { try RawConnection(port: port) }
}

/// A plain socket on loopback (TCP) or a unix socket, used the way a misbehaving client would:
/// raw bytes, no HTTP library. Every call blocks; run them with `runOnThread`.
final class RawConnection: @unchecked Sendable {
    // @unchecked: used by one thread at a time.
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        // On failure, no close here: deinit closes `fd`.
        guard result == 0 else {
            throw CorralError(.io, "connect to 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
    }

    init(unixPath: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in unixPath.utf8.enumerated() { raw[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        // On failure, no close here: deinit closes `fd`.
        guard result == 0 else {
            throw CorralError(.io, "connect to \(unixPath): \(String(cString: strerror(errno)))")
        }
    }

    private var open = true

    /// Runs also when an init throws, since every property is set by then. So the inits do
    /// not close `fd` themselves: that close came twice, the second on a number that another
    /// thread may have been given meanwhile.
    deinit { closeNow() }

    /// Closes the connection, as a client that goes away does.
    func closeNow() {
        guard open else { return }
        open = false
        close(fd)
    }

    /// Sends everything; false when the server has closed the connection.
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress.map { $0 + offset }, bytes.count - offset, Int32(MSG_NOSIGNAL))
            }
            if sent < 0 && errno == EINTR { continue }
            guard sent > 0 else { return false }
            offset += sent
        }
        return true
    }

    @discardableResult
    func send(_ text: String) -> Bool { send(Array(text.utf8)) }

    /// Bytes the server sent until it closed the connection, or until `timeout` passed.
    /// `closed` says which; `seconds` how long it took.
    func readUntilClosed(timeout: TimeInterval) -> (bytes: [UInt8], closed: Bool, seconds: TimeInterval) {
        let start = Date()
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let left = timeout - Date().timeIntervalSince(start)
            guard left > 0 else { return (received, false, Date().timeIntervalSince(start)) }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(max(1, left * 1000)))
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { continue }
            let count = recv(fd, &buffer, buffer.count, 0)
            if count > 0 {
                received.append(contentsOf: buffer[0..<count])
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                return (received, true, Date().timeIntervalSince(start))
            }
        }
    }

    /// One HTTP response's bytes, read until its body is complete (by Content-Length) or
    /// the connection closes or `timeout` passes.
    func readResponse(timeout: TimeInterval) -> RawResponse? {
        let start = Date()
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while Date().timeIntervalSince(start) < timeout {
            if let response = RawResponse(received), response.complete { return response }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, 100)
            guard ready > 0 else { continue }
            let count = recv(fd, &buffer, buffer.count, 0)
            if count > 0 {
                received.append(contentsOf: buffer[0..<count])
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                return RawResponse(received)
            }
        }
        return RawResponse(received)
    }

    /// Whether the server has closed its side (a read sees the end) within `timeout`.
    func isClosed(within timeout: TimeInterval) -> Bool {
        readUntilClosed(timeout: timeout).closed
    }
}

/// An HTTP/1.1 response parsed just enough for the tests.
struct RawResponse: Sendable {
    var status: Int
    var headers: [String: String]
    var body: [UInt8]
    var complete: Bool

    init?(_ bytes: [UInt8]) {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = bytes.indices.first(where: { Array(bytes[$0..<min($0 + 4, bytes.count)]) == separator })
        else { return nil }
        let head = String(decoding: bytes[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let parts = head.first?.split(separator: " ") ?? []
        guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
        self.status = status
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                in: .whitespaces)
        }
        self.headers = headers
        body = Array(bytes[(end + 4)...])
        if status == 204 || status == 304 {
            complete = true
            body = []
        } else if let length = headers["content-length"].flatMap(Int.init) {
            complete = body.count >= length
            body = Array(body.prefix(length))
        } else if headers["transfer-encoding"]?.lowercased() == "chunked" {
            (body, complete) = Self.dechunk(body)
        } else {
            complete = false
        }
    }

    /// A chunked body's data, and whether its last (empty) chunk has come.
    static func dechunk(_ bytes: [UInt8]) -> ([UInt8], Bool) {
        var data: [UInt8] = []
        var index = 0
        while true {
            guard
                let lineEnd = (index..<max(index, bytes.count - 1)).first(where: {
                    bytes[$0] == 13 && bytes[$0 + 1] == 10
                }),
                let size = Int(
                    String(decoding: bytes[index..<lineEnd], as: UTF8.self).split(separator: ";").first ?? "", radix: 16
                )
            else { return (data, false) }
            if size == 0 { return (data, true) }
            let start = lineEnd + 2
            guard start + size <= bytes.count else { return (data, false) }
            data += bytes[start..<(start + size)]
            index = start + size + 2
        }
    }

    var text: String { String(decoding: body, as: UTF8.self) }

    var error: APIErrorBodyView? { try? JSONDecoder().decode(APIErrorBodyView.self, from: Data(body)) }
}

/// The JSON error body, as a test reads it.
struct APIErrorBodyView: Decodable, Sendable {
    var code: String
    var message: String
    var hint: String?
}
