import CorralCore
import CorralGateway
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Log lines a gateway wrote, message and metadata, for checks that a token never appears.
final class LogCapture: Sendable {
    private let lines = Mutex<[String]>([])

    var all: [String] { lines.withLock { $0 } }

    func append(_ line: String) { lines.withLock { $0.append(line) } }

    func logger(label: String = "corral.gateway") -> Logger {
        var logger = Logger(label: label) { label in CapturingLogHandler(capture: self, label: label) }
        logger.logLevel = .trace
        return logger
    }
}

struct CapturingLogHandler: LogHandler {
    let capture: LogCapture
    let label: String
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        let rendered = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        capture.append(
            "\(event.level) \(label): \(event.message) \(rendered)\(event.error.map { " error=\($0)" } ?? "")")
    }
}

/// Decisions handed to the event sink, with the sandbox and session they were for.
final class RecordingSink: GatewayEventSink {
    private let entries = Mutex<[(GatewayDecision, SandboxID, SessionID?)]>([])

    var decisions: [GatewayDecision] { entries.withLock { $0.map(\.0) } }

    func decisions(for sandbox: SandboxID) -> [GatewayDecision] {
        entries.withLock { $0.filter { $0.1 == sandbox }.map(\.0) }
    }

    func sessions(for sandbox: SandboxID) -> [SessionID?] {
        entries.withLock { $0.filter { $0.1 == sandbox }.map(\.2) }
    }

    func record(_ decision: GatewayDecision, sandbox: SandboxID, session: SessionID?) async {
        entries.withLock { $0.append((decision, sandbox, session)) }
    }
}

/// Where the build put its executables: beside the test bundle.
enum BuildProducts {
    static func path(of name: String) throws -> String {
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
        for _ in 0..<3 {
            let candidate = directory.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        throw CorralError(
            .notFound, "\(name) is not built beside the tests (\(executable))", hint: "run `swift build` first")
    }
}

/// A free loopback TCP port: bound, read, released. Another process could take it between
/// release and use; on a test machine that is rare enough, and a clash fails loudly.
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw CorralError(.io, "socket failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw CorralError(.io, "bind failed") }
    var actual = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &actual) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: actual.sin_port))
}

/// corral-init in forwarder mode, as it runs inside a sandbox, but on the host: it listens on
/// a loopback port and forwards each connection to a sandbox's gateway socket.
final class Forwarder: Sendable {
    let port: Int
    private let process: ChildProcess

    private init(port: Int, process: ChildProcess) {
        self.port = port
        self.process = process
    }

    /// Starts corral-init and waits until its port accepts connections. Polling the port is
    /// the only readiness signal corral-init gives; the wait is bounded.
    static func start(socket: String) async throws -> Forwarder {
        let binary = try BuildProducts.path(of: "corral-init")
        let port = try freeLoopbackPort()
        let process = try ChildProcess.spawn(
            binary, [], environment: ["CORRAL_GATEWAY_SOCKET": socket, "CORRAL_PROXY_PORT": "\(port)"])
        let forwarder = Forwarder(port: port, process: process)
        let deadline = ContinuousClock.now + .seconds(20)
        while !(try await runOnThread { TCPClient.canConnect(port: port) }) {
            guard process.isRunning else {
                throw CorralError(
                    .unavailable, "corral-init exited with \(process.wait()) before listening")
            }
            guard ContinuousClock.now < deadline else {
                forwarder.stop()
                throw CorralError(.timeout, "corral-init did not listen on 127.0.0.1:\(port) within 20 s")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        return forwarder
    }

    var proxyURL: String { "http://127.0.0.1:\(port)" }

    func stop() {
        process.signal(SIGTERM)
        process.wait()
    }
}

/// Blocking socket clients for driving the gateway by hand; call them through
/// `runOnThread`, never on the cooperative pool.
enum TCPClient {
    static func canConnect(port: Int) -> Bool {
        guard let fd = try? connect(port: port) else { return false }
        close(fd)
        return true
    }

    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CorralError(.io, "socket failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            close(fd)
            throw CorralError(.unavailable, "cannot connect to 127.0.0.1:\(port)")
        }
        setTimeout(fd)
        return fd
    }

    static func connect(unixSocket path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CorralError(.io, "socket failed") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.prefix(raw.count - 1).enumerated() { raw[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            close(fd)
            throw CorralError(.unavailable, "cannot connect to \(path)")
        }
        setTimeout(fd)
        return fd
    }

    /// Reads time out after 30 s, so that a broken gateway fails a test instead of hanging it.
    /// A guard against a gateway that never answers, not a measure of speed: in a full parallel
    /// run on two cores the first minute starves every process (CI's gateway tests have taken
    /// 55 to 85 s there, and an answer once came after this guard's 30 s).
    private static func setTimeout(_ fd: Int32) {
        var timeout = timeval(tv_sec: 120, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    static func send(_ fd: Int32, _ text: String) {
        send(fd, Array(text.utf8))
    }

    static func send(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if sent < 0 && errno == EINTR { continue }
            if sent <= 0 { return }
            offset += sent
        }
    }

    /// Everything until the peer closes (or the read times out). A signal interrupts a read on
    /// a socket with a receive timeout even under SA_RESTART (signal(7)); that read is tried
    /// again, here and below.
    static func readAll(_ fd: Int32) -> String {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            data.append(contentsOf: buffer[0..<count])
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Reads until `marker` has arrived; returns what was read.
    static func read(_ fd: Int32, until marker: String) -> String {
        var data: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let count = recv(fd, &byte, 1, 0)
            if count < 0 && errno == EINTR { continue }
            guard count == 1 else { break }
            data.append(byte)
            if String(decoding: data, as: UTF8.self).hasSuffix(marker) { break }
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// True when the peer closed without sending anything: an end of file, or a reset (a
    /// peer that closes with our request unread resets the connection).
    static func closedWithoutAnswer(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        var count = recv(fd, &byte, 1, 0)
        while count < 0 && errno == EINTR { count = recv(fd, &byte, 1, 0) }
        return count == 0 || (count < 0 && errno == ECONNRESET)
    }

    /// One request on a new connection to a unix socket; the whole answer.
    static func exchange(unixSocket path: String, _ request: String) throws -> String {
        let fd = try connect(unixSocket: path)
        defer { close(fd) }
        send(fd, request)
        return readAll(fd)
    }

    /// One request on a new TCP connection; the whole answer.
    static func exchange(port: Int, _ request: String) throws -> String {
        let fd = try connect(port: port)
        defer { close(fd) }
        send(fd, request)
        return readAll(fd)
    }
}
