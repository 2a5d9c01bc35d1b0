import CorralCore
import Logging
import NIOCore
import NIOSSL
import PostgresNIO
import Synchronization

/// A small pool of connections to one database. A connection that failed is dropped, and the
/// next caller opens a new one: while the database is down every call fails at once with
/// `.unavailable` (a refused connect), and calls succeed again once it is back, without
/// anything to restart in the process.
final class PostgresConnections: Sendable {
    let url: PostgresStoreURL
    let maximum: Int
    let logger: Logger
    private let configuration: PostgresConnection.Configuration
    private let state = Mutex(State())
    private let nextID = Atomic<Int>(1)

    private struct State: ~Copyable {
        var idle: [PostgresConnection] = []
        var open = 0
        var waiters: [CheckedContinuation<PostgresConnection?, Never>] = []
        var closed = false
    }

    init(url: PostgresStoreURL, maximum: Int, connectTimeout: Duration, logger: Logger) throws {
        self.url = url
        self.maximum = max(1, maximum)
        self.logger = logger
        self.configuration = try Self.configuration(url, connectTimeout: connectTimeout)
    }

    static func configuration(_ url: PostgresStoreURL, connectTimeout: Duration) throws
        -> PostgresConnection.Configuration
    {
        var configuration: PostgresConnection.Configuration
        if let directory = url.socketDirectory {
            configuration = .init(
                unixSocketPath: "\(directory)/.s.PGSQL.\(url.port)", username: url.user, password: url.password,
                database: url.database)
        } else {
            let tls: PostgresConnection.Configuration.TLS
            do {
                switch url.tls {
                case .disable: tls = .disable
                case .prefer:
                    var settings = TLSConfiguration.makeClientConfiguration()
                    settings.certificateVerification = .none
                    tls = .prefer(try NIOSSLContext(configuration: settings))
                case .require:
                    var settings = TLSConfiguration.makeClientConfiguration()
                    settings.certificateVerification = .none
                    tls = .require(try NIOSSLContext(configuration: settings))
                case .verifyFull:
                    tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
                }
            } catch {
                throw CorralError(
                    .invalidArgument, "cannot set up TLS for the session store at \(url): \(error)",
                    hint: "use ?sslmode=disable on a trusted network, or fix the system's CA certificates")
            }
            configuration = .init(
                host: url.host, port: url.port, username: url.user, password: url.password, database: url.database,
                tls: tls)
        }
        let milliseconds =
            connectTimeout.components.seconds * 1000 + connectTimeout.components.attoseconds / 1_000_000_000_000_000
        configuration.options.connectTimeout = .milliseconds(max(1, milliseconds))
        // Every name in the store's SQL is unqualified: the schema comes first on the path.
        configuration.options.additionalStartupParameters = [
            ("search_path", url.schema), ("application_name", "corral"), ("synchronous_commit", "on"),
        ]
        return configuration
    }

    /// One connection, opened now and not pooled: for migrations and the listener.
    func connect() async throws -> PostgresConnection {
        do {
            return try await PostgresConnection.connect(
                configuration: configuration, id: nextID.add(1, ordering: .relaxed).oldValue, logger: logger)
        } catch {
            throw PostgresStoreError.map(error, url: url, doing: "connecting")
        }
    }

    /// Runs `body` on a pooled connection. Errors come back mapped (`what` names the call).
    func withConnection<T: Sendable>(
        _ what: @autoclosure () -> String, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        let connection = try await acquire()
        do {
            let value = try await body(connection)
            release(connection)
            return value
        } catch {
            // A connection that saw a connection-level error is not reused; a server error
            // (a constraint, a bad value) leaves it in a good state.
            let mapped = PostgresStoreError.map(error, url: url, doing: what())
            release(connection, broken: mapped.code == .unavailable || mapped.code == .cancelled)
            throw mapped
        }
    }

    private func acquire() async throws -> PostgresConnection {
        enum Step {
            case use(PostgresConnection)
            case open
            case wait
            case closed
        }
        while true {
            let step = state.withLock { state -> Step in
                if state.closed { return .closed }
                while let connection = state.idle.popLast() {
                    if !connection.isClosed { return .use(connection) }
                    state.open -= 1
                }
                if state.open < maximum {
                    state.open += 1
                    return .open
                }
                return .wait
            }
            switch step {
            case .use(let connection): return connection
            case .closed:
                throw CorralError(.cancelled, "the session store at \(url) was shut down")
            case .open:
                do {
                    return try await connect()
                } catch {
                    giveBackSlot()
                    throw error
                }
            case .wait:
                let handed = await withCheckedContinuation { continuation in
                    let resumeNow = state.withLock { state -> Bool in
                        if state.closed || state.open < maximum || !state.idle.isEmpty { return true }
                        state.waiters.append(continuation)
                        return false
                    }
                    if resumeNow { continuation.resume(returning: nil) }
                }
                if let handed { return handed }
            }
        }
    }

    private func giveBackSlot() {
        let waiter = state.withLock { state -> CheckedContinuation<PostgresConnection?, Never>? in
            state.open -= 1
            return state.waiters.isEmpty ? nil : state.waiters.removeFirst()
        }
        waiter?.resume(returning: nil)
    }

    private func release(_ connection: PostgresConnection, broken: Bool = false) {
        if broken || connection.isClosed {
            if !connection.isClosed { Self.closeDetached(connection) }
            giveBackSlot()
            return
        }
        let waiter = state.withLock { state -> CheckedContinuation<PostgresConnection?, Never>? in
            if state.closed {
                state.open -= 1
                return nil
            }
            if !state.waiters.isEmpty { return state.waiters.removeFirst() }
            state.idle.append(connection)
            return nil
        }
        if let waiter {
            waiter.resume(returning: connection)
        } else if state.withLock({ $0.closed }) {
            Self.closeDetached(connection)
        }
    }

    deinit {
        // A store dropped without shutdown(): postgres-nio wants every connection closed
        // before it goes, so each is kept until its close completes.
        for connection in state.withLock({ $0.idle }) { Self.closeDetached(connection) }
    }

    /// Closes a connection without waiting, keeping it alive until the close completes.
    static func closeDetached(_ connection: PostgresConnection) {
        connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
    }

    /// Closes idle connections and refuses new calls; calls under way finish first.
    func shutdown() async {
        let (idle, waiters) = state.withLock { state in
            state.closed = true
            defer {
                state.open -= state.idle.count
                state.idle = []
                state.waiters = []
            }
            return (state.idle, state.waiters)
        }
        for waiter in waiters { waiter.resume(returning: nil) }
        for connection in idle { try? await connection.close() }
    }
}

extension PostgresConnection {
    /// `query` with its async overload chosen: the rows as they stream in.
    @discardableResult
    func rows(_ query: PostgresQuery, logger: Logger) async throws -> PostgresRowSequence {
        try await self.query(query, logger: logger)
    }

    /// Every row of a short answer, gathered on the connection's event loop: the caller is
    /// resumed once, not once for the answer and again for its rows.
    func allRows(_ query: PostgresQuery, logger: Logger) async throws -> [PostgresRow] {
        try await self.query(query, logger: logger).get().rows
    }
}

extension AsyncSequence {
    /// Every element, in order.
    func gather() async throws -> [Element] {
        var elements: [Element] = []
        for try await element in self { elements.append(element) }
        return elements
    }
}
