import CCorralInit
import Glibc
import Synchronization

/// Forwards the sandbox's loopback proxy port to its gateway socket on the host.
///
/// A sandbox has no network interface but loopback. Each TCP connection accepted on
/// 127.0.0.1:3128 gets a fresh connection to the gateway's unix socket (bind-mounted from a
/// per-sandbox host directory), and bytes are copied both ways until both sides have closed.
/// Nothing is parsed here: the gateway knows the sandbox by the socket the connection came in
/// on, and applies all policy itself. The socket is dialled per connection, so it may appear
/// after the sandbox started (a warm pool member is bound to its gateway when claimed).
///
/// Concurrency: one acceptor thread; per connection, two threads, one per direction, each
/// doing blocking reads and writes. Two threads rather than one poll loop so that a peer that
/// writes without reading can never stall the other direction. Connections beyond
/// `maxConnections` are closed at once.
final class EgressForwarder: Sendable {
    struct Configuration: Sendable {
        var gatewaySocketPath: String
        var listenPort: UInt16 = 3128
        var maxConnections = 256
    }

    /// `sun_path` holds 108 bytes including the terminating NUL.
    static let maxSocketPathLength = 108

    let configuration: Configuration
    private let listener: Int32
    private let activeConnections = Atomic<Int>(0)

    private init(configuration: Configuration, listener: Int32) {
        self.configuration = configuration
        self.listener = listener
    }

    /// Binds the listening socket, then accepts on a thread of its own. Binding happens
    /// before this returns so that a failure is reported at startup, not lost in a thread.
    static func start(configuration: Configuration) -> Result<EgressForwarder, InitError> {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listener >= 0 else {
            return .failure(InitError("cannot create the proxy socket: \(describeErrno(errno))"))
        }
        var reuse: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = configuration.listenPort.bigEndian
        address.sin_addr.s_addr = (UInt32(127) << 24 | 1).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(listener, 128) == 0 else {
            let reason = describeErrno(errno)
            close(listener)
            return .failure(InitError("cannot listen on 127.0.0.1:\(configuration.listenPort): \(reason)"))
        }
        let forwarder = EgressForwarder(configuration: configuration, listener: listener)
        guard spawnDetachedThread({ forwarder.acceptLoop() }) else {
            close(listener)
            return .failure(InitError("cannot start the proxy thread: \(describeErrno(errno))"))
        }
        return .success(forwarder)
    }

    private func acceptLoop() {
        while true {
            // Close-on-exec from the start: PID 1 starts commands for the control connection
            // on another thread, and a relayed connection must not leak into them.
            let client = corral_accept(listener)
            if client < 0 {
                switch errno {
                case EINTR, ECONNABORTED, EPROTO:
                    continue
                default:
                    // Out of descriptors or memory: back off instead of spinning, and
                    // keep serving once connections have drained.
                    logLine("proxy accept failed: \(describeErrno(errno))")
                    usleep(100_000)
                    continue
                }
            }
            guard activeConnections.add(1, ordering: .relaxed).newValue <= configuration.maxConnections else {
                activeConnections.subtract(1, ordering: .relaxed)
                close(client)
                continue
            }
            let started = spawnDetachedThread { [self] in
                serve(client: client)
            }
            if !started {
                activeConnections.subtract(1, ordering: .relaxed)
                close(client)
            }
        }
    }

    /// Runs on the connection's first thread: dials the gateway, then copies client→gateway
    /// here and gateway→client on a second thread.
    private func serve(client: Int32) {
        guard let gateway = connectGateway() else {
            close(client)
            activeConnections.subtract(1, ordering: .relaxed)
            return
        }
        let connection = RelayedConnection(client: client, gateway: gateway) { [self] in
            activeConnections.subtract(1, ordering: .relaxed)
        }
        if !spawnDetachedThread({ connection.copy(from: gateway, to: client) }) {
            connection.finishDirection()  // the direction that never started
            connection.abort()
        }
        connection.copy(from: client, to: gateway)
    }

    private func connectGateway() -> Int32? {
        switch connectUnixSocket(configuration.gatewaySocketPath) {
        case .success(let fd):
            return fd
        case .failure(let error):
            logLine("cannot reach the gateway at \(configuration.gatewaySocketPath): \(error.description)")
            return nil
        }
    }
}

/// One proxied connection: two sockets and two copying directions. Whichever direction
/// finishes last closes both sockets.
private final class RelayedConnection: Sendable {
    let client: Int32
    let gateway: Int32
    private let directionsLeft = Atomic<Int>(2)
    private let onClose: @Sendable () -> Void

    /// Per direction, allocated only while the connection lasts: 256 connections at most
    /// cost 32 MiB, counted against the sandbox's own memory limit.
    private static let bufferSize = 64 * 1024

    init(client: Int32, gateway: Int32, onClose: @escaping @Sendable () -> Void) {
        self.client = client
        self.gateway = gateway
        self.onClose = onClose
    }

    /// Copies until `source` reaches end of file, then half-closes `destination` so that the
    /// peer sees the end too while the other direction keeps flowing. An error on either side
    /// tears down the whole connection.
    func copy(from source: Int32, to destination: Int32) {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.bufferSize, alignment: 16)
        defer { buffer.deallocate() }
        copying: while true {
            let count = recv(source, buffer, Self.bufferSize, 0)
            if count == 0 {
                shutdown(destination, Int32(SHUT_WR))
                break
            }
            if count < 0 {
                if errno == EINTR { continue }
                abort()
                break
            }
            var offset = 0
            while offset < count {
                let sent = send(destination, buffer + offset, count - offset, Int32(MSG_NOSIGNAL))
                if sent < 0 {
                    if errno == EINTR { continue }
                    abort()
                    break copying
                }
                offset += sent
            }
        }
        finishDirection()
    }

    /// Wakes both directions: their reads return end of file, their writes fail.
    func abort() {
        shutdown(client, Int32(SHUT_RDWR))
        shutdown(gateway, Int32(SHUT_RDWR))
    }

    func finishDirection() {
        if directionsLeft.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            close(client)
            close(gateway)
            onClose()
        }
    }
}
