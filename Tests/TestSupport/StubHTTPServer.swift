import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A request as the stub server read it off the wire.
public struct StubRequest: Sendable {
    public var method: String
    public var target: String
    public var headers: [(String, String)]
    public var body: [UInt8]
    /// True when the body came chunked.
    public var chunked: Bool

    public func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
}

/// The connection a handler answers on: raw bytes, so tests can write any framing.
public final class StubConnection: @unchecked Sendable {
    let fd: Int32
    private let closed = Mutex(false)

    init(fd: Int32) { self.fd = fd }

    /// Writes all of `bytes`; false once the peer has gone.
    @discardableResult
    public func write(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }

    @discardableResult
    public func write(_ text: String) -> Bool { write(Array(text.utf8)) }

    /// Writes a complete response with Content-Length.
    public func respond(status: Int, headers: [String: String] = [:], body: [UInt8] = []) {
        var head = "HTTP/1.1 \(status) Stub\r\nContent-Length: \(body.count)\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        write(head + "\r\n")
        write(body)
    }

    public func respond(status: Int, json: String) {
        respond(status: status, headers: ["Content-Type": "application/json"], body: Array(json.utf8))
    }

    /// Closes the connection now; the handler's return value no longer matters.
    public func close() {
        let first = closed.withLock { wasClosed in
            defer { wasClosed = true }
            return !wasClosed
        }
        if first {
            shutdown(fd, Int32(SHUT_RDWR))
            Glibc.close(fd)
        }
    }

    var isClosed: Bool { closed.withLock { $0 } }

    /// Blocks until the peer closes its side (a read returns 0 or fails).
    public func waitForPeerClose() {
        var byte: UInt8 = 0
        while true {
            let n = recv(fd, &byte, 1, 0)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
        }
    }
}

/// A small HTTP/1.1 server on a unix socket or loopback TCP, for transport tests.
///
/// Each connection runs on its own thread and may carry several requests (keep-alive). The
/// handler answers by writing to the connection; it returns `true` to keep the connection
/// open for another request.
public final class StubHTTPServer: @unchecked Sendable {
    public typealias Handler = @Sendable (StubRequest, StubConnection) -> Bool

    public let socketPath: String?
    public let port: Int?
    private let listenFD: Int32
    private let handler: Handler
    private let stats = Mutex((connections: 0, requests: [StubRequest]()))
    /// `stop` was called; the accept thread has closed `listenFD`.
    private let listener = Mutex((stopped: false, closed: false))

    /// Listens on a unix socket at `path`.
    public init(unixSocket path: String, handler: @escaping Handler) throws {
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw StubError.system("socket") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw StubError.system("path too long")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            Glibc.close(fd)
            throw StubError.system("bind \(path)")
        }
        self.listenFD = fd
        self.socketPath = path
        self.port = nil
        self.handler = handler
        startAccepting()
    }

    /// Listens on 127.0.0.1 at a free port.
    public init(loopbackHandler handler: @escaping Handler) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw StubError.system("socket") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            Glibc.close(fd)
            throw StubError.system("bind 127.0.0.1")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.listenFD = fd
        self.socketPath = nil
        self.port = Int(UInt16(bigEndian: actual.sin_port))
        self.handler = handler
        startAccepting()
    }

    deinit { stop() }

    public var connectionCount: Int { stats.withLock { $0.connections } }
    public var requests: [StubRequest] { stats.withLock { $0.requests } }

    /// Stops accepting: the shutdown makes the accept thread's `accept` fail (now, or as soon
    /// as it calls it), and that thread closes the descriptor.
    public func stop() {
        let first = listener.withLock { state in
            defer { state.stopped = true }
            guard !state.stopped else { return false }
            // Under the lock the accept thread closes under, so the number is still ours.
            if !state.closed { shutdown(listenFD, Int32(SHUT_RDWR)) }
            return true
        }
        guard first else { return }
        if let socketPath { unlink(socketPath) }
    }

    private func startAccepting() {
        let thread = Thread { [self] in
            while true {
                let client = accept(listenFD, nil, nil)
                if client < 0 {
                    if errno == EINTR { continue }
                    break
                }
                stats.withLock { $0.connections += 1 }
                let worker = Thread { [self] in serve(StubConnection(fd: client)) }
                worker.start()
            }
            // Closed here, by the one thread that uses it, not in `stop`. Closed there, the
            // number could go to another test's new socket before this loop came back to
            // `accept` (a thread not yet started, or descheduled after an accept): this
            // loop would then take that socket's connections and answer them with this
            // server's handler.
            listener.withLock { state in
                Glibc.close(listenFD)
                state.closed = true
            }
        }
        thread.start()
    }

    private func serve(_ connection: StubConnection) {
        var reader = StubReader(fd: connection.fd)
        while !connection.isClosed {
            guard let request = reader.readRequest() else { break }
            stats.withLock { $0.requests.append(request) }
            if !handler(request, connection) { break }
        }
        connection.close()
    }
}

public enum StubError: Error {
    case system(String)
}

/// Reads HTTP/1.1 requests from a socket: request line, headers, then a body framed by
/// Content-Length or chunked encoding.
struct StubReader {
    let fd: Int32
    var buffer: [UInt8] = []

    mutating func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        var n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        while n < 0 && errno == EINTR { n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
        guard n > 0 else { return false }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }

    mutating func readLine() -> String? {
        while true {
            if let index = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                var line = Array(buffer[..<index])
                buffer.removeFirst(index + 1)
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            guard fill() else { return nil }
        }
    }

    mutating func readBytes(_ count: Int) -> [UInt8]? {
        while buffer.count < count {
            guard fill() else { return nil }
        }
        let bytes = Array(buffer[..<count])
        buffer.removeFirst(count)
        return bytes
    }

    mutating func readRequest() -> StubRequest? {
        guard let requestLine = readLine(), !requestLine.isEmpty else { return nil }
        let parts = requestLine.split(separator: " ")
        guard parts.count >= 2 else { return nil }
        var headers: [(String, String)] = []
        while let line = readLine(), !line.isEmpty {
            if let colon = line.firstIndex(of: ":") {
                headers.append(
                    (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            }
        }
        var request = StubRequest(
            method: String(parts[0]), target: String(parts[1]), headers: headers, body: [], chunked: false)
        if request.header("Transfer-Encoding")?.lowercased() == "chunked" {
            request.chunked = true
            while let sizeLine = readLine(), let size = Int(sizeLine.split(separator: ";")[0], radix: 16) {
                if size == 0 {
                    while let trailer = readLine(), !trailer.isEmpty {}
                    break
                }
                guard let data = readBytes(size) else { return nil }
                request.body += data
                _ = readLine()
            }
        } else if let length = request.header("Content-Length").flatMap(Int.init), length > 0 {
            guard let data = readBytes(length) else { return nil }
            request.body = data
        }
        return request
    }
}
