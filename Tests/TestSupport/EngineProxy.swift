import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A unix-socket forwarder in front of the real engine, which a test can take down and bring
/// back: a real engine outage for the code under test (connections refused, open ones cut),
/// without touching the engine other tests use.
public final class EngineProxy: @unchecked Sendable {
    public let socketPath: String
    private let upstream: String
    private let state = Mutex<(listener: Int32, connections: Set<Int32>)>((-1, []))

    public init(upstream: String, socketPath: String) throws {
        self.upstream = upstream
        self.socketPath = socketPath
        try up()
    }

    deinit { down() }

    public var endpoint: String { "unix://\(socketPath)" }

    /// Listens and forwards.
    public func up() throws {
        unlink(socketPath)
        let fd = try Self.listen(at: socketPath)
        state.withLock { $0.listener = fd }
        let thread = Thread { [self] in acceptLoop(fd) }
        thread.start()
    }

    /// Stops listening and cuts every open connection: the engine is "out". The shutdowns
    /// end the accept loop and the pumps, which close their descriptors themselves.
    public func down() {
        state.withLock { state in
            // Under the lock the accept loop and the pumps close under: every number here is
            // still open, never one another thread's socket has taken since.
            if state.listener >= 0 { shutdown(state.listener, Int32(SHUT_RDWR)) }
            for fd in state.connections { shutdown(fd, Int32(SHUT_RDWR)) }
            state.listener = -1
            state.connections = []
        }
        unlink(socketPath)
    }

    private func acceptLoop(_ listener: Int32) {
        // The listener is closed here, when its loop ends, not in `down`: closed there, its
        // number could go to another thread's new socket before this loop came back to
        // `accept`, and the loop would then take that socket's connections.
        defer {
            state.withLock { state in
                if state.listener == listener { state.listener = -1 }
                close(listener)
            }
        }
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            let server = Self.connect(to: upstream)
            guard server >= 0 else {
                close(client)
                continue
            }
            let open = state.withLock { state -> Bool in
                guard state.listener == listener else { return false }
                state.connections.insert(client)
                state.connections.insert(server)
                return true
            }
            guard open else {
                close(client)
                close(server)
                return
            }
            let done = Mutex(0)
            for (from, to) in [(client, server), (server, client)] {
                Thread { [self] in
                    Self.pump(from, to)
                    shutdown(to, Int32(SHUT_WR))
                    let both = done.withLock { count -> Bool in
                        count += 1
                        return count == 2
                    }
                    if both {
                        // Closed under the lock, with their removal from the set: `down`
                        // shuts down what the set holds, and must not find closed numbers.
                        state.withLock {
                            $0.connections.remove(client)
                            $0.connections.remove(server)
                            close(client)
                            close(server)
                        }
                    }
                }.start()
            }
        }
    }

    private static func pump(_ from: Int32, _ to: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(from, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            var offset = 0
            while offset < n {
                let written = buffer[offset..<n].withUnsafeBytes {
                    send(to, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
                }
                if written <= 0 { return }
                offset += written
            }
        }
    }

    private static func address(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[index] = byte }
        }
        return address
    }

    private static func listen(at path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = address(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard fd >= 0, bound == 0, Glibc.listen(fd, 64) == 0 else {
            close(fd)
            throw StubError.system("listen \(path)")
        }
        return fd
    }

    private static func connect(to path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = address(path)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if result != 0 {
            close(fd)
            return -1
        }
        return fd
    }
}
