import ControlProtocol
import CorralCore
import DockerEngine
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The host's end of every sandbox's control connection (see `ControlProtocol.swift` for the
/// protocol and corral-init's `ControlLoop` for the other end): one listening socket per
/// sandbox, `control.sock` in its gateway directory, which corral-init dials as soon as it
/// can. A command sent down it costs a fork inside the sandbox and a few frames, instead of
/// the engine's exec.
///
/// Every process in the sandbox can reach that socket, so a connection counts only once it
/// has sent a hello with the sandbox's control key, which only corral-init (PID 1) holds; the
/// first such connection stays the sandbox's for as long as it lives. Until then a connection
/// may send one small frame within `helloDeadline`; a socket holds at most `maxConnections`
/// connections at once. Refused connections are logged (one line, at most one per
/// `refusalLogInterval` per sandbox) and are otherwise left alone: the host stops reading them
/// and closes them at their deadline, so that a peer that redials at once (an old corral-init)
/// cannot make a loop of it.
///
/// The process that makes a sandbox (or adopts it) listens for it; other processes, and any
/// sandbox whose corral-init has not dialled in, use the engine's exec. A process adopts a
/// running sandbox after a restart, and on demand when asked for what only the control
/// connection can do (`adopt`: one listen, however many ask at once). A connection that
/// drops takes its running commands with it (corral-init stops them), unless they were
/// started detached, and the commands fail with an error that says so; nothing is re-run.
public final class ControlChannels: Sendable {
    public static let socketName = "control.sock"
    /// The host's copy of a sandbox's control key: in its host directory, beside (not inside)
    /// the gateway directory that the sandbox sees, mode 0600.
    public static let secretName = "control.secret"

    public struct Configuration: Sendable {
        /// Connections one sandbox's socket holds at once, whether or not they said hello:
        /// corral-init's, and one more while it redials. Others are closed as they come.
        public var maxConnections = 2
        /// How long a new connection has to send corral-init's hello.
        public var helloDeadline: Duration = .seconds(3)
        /// Output of a sandbox's commands received and not yet read by their callers, at most:
        /// the output windows of all of a connection's streams come out of it (see
        /// `ControlConnection`).
        public var maxBufferedOutput = 16 << 20
        /// One stream's output window, when `maxBufferedOutput` has room for it: what one
        /// command may have in flight to a caller that does not read.
        public var streamWindow = ControlLimits.outputWindow
        /// The least time between two log lines about one sandbox's refused connections.
        public var refusalLogInterval: Duration = .seconds(10)

        public init() {}
    }

    private let group: any EventLoopGroup
    private let listeners = Mutex<[SandboxID: ControlListener]>([:])
    /// Adoptions under way, so that two callers adopting one sandbox at once share one listen
    /// (a second listen would replace the first and drop a connection it may have taken).
    private let adopting = Mutex<[SandboxID: Task<Void, any Error>]>([:])
    public let configuration: Configuration
    let logger: Logger

    public init(
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        configuration: Configuration = Configuration(), logger: Logger
    ) {
        self.group = group
        self.configuration = configuration
        self.logger = logger
    }

    /// Listens on `directory/control.sock` for `sandbox`, replacing any socket file there.
    ///
    /// For a sandbox about to be started (`newSandbox`), a new control key is made, kept in
    /// `control.secret` beside `directory`, and put in `directory` as `control.key` for
    /// corral-init to read at boot. For a running sandbox (adopted after a restart) the key
    /// kept by whoever made it is used, and nothing is put within the sandbox's reach; without
    /// one this throws, and the sandbox's commands go through the engine's exec.
    public func listen(_ sandbox: SandboxID, directory: URL, newSandbox: Bool = false) async throws {
        if let previous = listeners.withLock({ $0.removeValue(forKey: sandbox) }) { previous.shut() }
        let path = directory.appendingPathComponent(Self.socketName).path
        let keyFile = directory.appendingPathComponent(ControlKey.fileName).path
        let secretFile = directory.deletingLastPathComponent().appendingPathComponent(Self.secretName).path
        let key: ControlKey
        if newSandbox {
            key = ControlKey.random()
            try Self.issue(key, secretFile: secretFile, keyFile: keyFile)
        } else {
            key = try Self.readSecret(secretFile, sandbox: sandbox)
        }
        let listener = ControlListener(
            sandbox: sandbox, key: key, keyFile: keyFile, keyIssued: newSandbox, configuration: configuration,
            logger: logger)
        let server: any Channel
        do {
            // Bound here, not through NIO: a listener NIO bound unlinks its path when it closes,
            // and the close of one this replaces (here or in another process) could come after
            // this bind, and take the new socket's file away. The sandbox's user is not the
            // host's: mode 0666. NIO owns the descriptor from here: the channel it makes closes it.
            let fd = try UnixSocketPath.listeningSocket(path, mode: 0o666, backlog: 4)
            server = try await ServerBootstrap(group: group)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try listener.accept(channel) }
                }
                .withBoundSocket(fd).get()
        } catch {
            listener.shut()
            throw CorralError(.io, "cannot listen on the control socket \(path)", underlying: error)
        }
        listener.serve(on: server)
        let previous = listeners.withLock { listeners in
            defer { listeners[sandbox] = listener }
            return listeners[sandbox]
        }
        previous?.shut()
    }

    /// Listens for a running sandbox this process did not make (after a restart), unless it
    /// listens already; callers that come while one adoption is under way wait for it and
    /// share its outcome. Throws as `listen` does.
    public func adopt(_ sandbox: SandboxID, directory: URL) async throws {
        let task: Task<Void, any Error>? = adopting.withLock { adopting in
            if let running = adopting[sandbox] { return running }
            guard !isListening(sandbox) else { return nil }
            let task = Task { try await self.listen(sandbox, directory: directory) }
            adopting[sandbox] = task
            return task
        }
        guard let task else { return }
        defer { adopting.withLock { if $0[sandbox] == task { $0[sandbox] = nil } } }
        try await task.value
    }

    /// The sandboxes this process listens for.
    public var listening: [SandboxID] { listeners.withLock { Array($0.keys) } }

    /// Whether this process listens for `sandbox`.
    public func isListening(_ sandbox: SandboxID) -> Bool {
        listeners.withLock { $0[sandbox] != nil }
    }

    /// Stops listening for `sandbox` and drops its connections.
    public func close(_ sandbox: SandboxID) {
        if let listener = listeners.withLock({ $0.removeValue(forKey: sandbox) }) { listener.shut() }
    }

    /// Stops listening for every sandbox.
    public func closeAll() {
        _ = shutEvery()
    }

    /// Stops listening for every sandbox, and returns once the listening sockets are closed.
    public func closeAllAndWait() async {
        for closed in shutEvery() { try? await closed?.get() }
    }

    private func shutEvery() -> [EventLoopFuture<Void>?] {
        listeners.withLock { listeners in
            defer { listeners.removeAll() }
            return Array(listeners.values)
        }.map { $0.shut() }
    }

    /// The live connection of `sandbox`, once corral-init has dialled in and proved itself.
    func connection(for sandbox: SandboxID) -> ControlConnection? {
        listeners.withLock { $0[sandbox] }?.connection
    }

    /// Whether corral-init of `sandbox` is connected to this process.
    public func isConnected(_ sandbox: SandboxID) -> Bool { connection(for: sandbox) != nil }

    /// Waits up to `timeout` for corral-init to dial in (woken by its hello, not by polling);
    /// true when it has. When it has not, its key is taken out of the sandbox's reach (unless
    /// `withdrawingKey` is false: the caller runs nothing else there): other commands are
    /// about to run there, and none of them may find it.
    public func waitForConnection(_ sandbox: SandboxID, timeout: Duration, withdrawingKey: Bool = true) async -> Bool {
        guard let listener = listeners.withLock({ $0[sandbox] }) else { return false }
        await listener.waitForConnection(timeout: timeout)
        guard listener.connection != nil else {
            if withdrawingKey { listener.withdrawKey() }
            return false
        }
        return true
    }

    /// Takes `sandbox`'s key out of its reach, if it is still there: a command is about to
    /// run in the sandbox by another way than its control connection.
    func withdrawKey(_ sandbox: SandboxID) {
        listeners.withLock { $0[sandbox] }?.withdrawKey()
    }
}

/// One sandbox's socket: who is connected to it, and which connection is corral-init's.
final class ControlListener: Sendable {
    struct State {
        var server: (any Channel)?
        /// corral-init's connection, once it said hello with the key.
        var connection: ControlConnection?
        /// Every connection open on the socket, corral-init's included.
        var open: [ObjectIdentifier: any Channel] = [:]
        var closed = false
        /// Whether `control.key` may still be in the sandbox's directory.
        var keyIssued: Bool
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        /// Waits that are over (timed out) whether or not their waiter registered yet.
        var over: Set<Int> = []
        var nextWaiter = 0
        var lastRefusalLogged: ContinuousClock.Instant?
        var refusedSinceLogged = 0
    }

    let sandbox: SandboxID
    private let key: ControlKey
    private let keyFile: String
    let configuration: ControlChannels.Configuration
    private let logger: Logger
    private let state: Mutex<State>

    init(
        sandbox: SandboxID, key: ControlKey, keyFile: String, keyIssued: Bool,
        configuration: ControlChannels.Configuration, logger: Logger
    ) {
        self.sandbox = sandbox
        self.key = key
        self.keyFile = keyFile
        self.configuration = configuration
        self.logger = logger
        self.state = Mutex(State(keyIssued: keyIssued))
    }

    func serve(on server: any Channel) {
        let closed = state.withLock { state in
            state.server = server
            return state.closed
        }
        if closed { server.close(promise: nil) }
    }

    /// Why a connection was closed as it came.
    struct TooManyConnections: Error {}

    /// Sets up a new connection; throws (and the connection is closed at once) when the
    /// socket holds enough already. Runs on the connection's event loop.
    func accept(_ channel: any Channel) throws {
        let admitted = state.withLock { state in
            guard !state.closed, state.open.count < configuration.maxConnections else { return false }
            state.open[ObjectIdentifier(channel)] = channel
            return true
        }
        guard admitted else {
            refused("too many connections (at most \(configuration.maxConnections))")
            throw TooManyConnections()
        }
        let connection = ControlConnection(
            channel: channel, sandbox: sandbox, budget: configuration.maxBufferedOutput,
            streamWindow: configuration.streamWindow)
        channel.closeFuture.whenComplete { _ in
            self.state.withLock { _ = $0.open.removeValue(forKey: ObjectIdentifier(channel)) }
        }
        let deadline = channel.eventLoop.scheduleTask(in: TimeAmount(configuration.helloDeadline)) {
            // A refused connection was logged when it was refused.
            if connection.phase == .awaitingHello {
                self.refused("no hello within \(self.configuration.helloDeadline)")
            }
            if connection.phase != .authenticated { channel.close(promise: nil) }
        }
        channel.closeFuture.whenComplete { _ in deadline.cancel() }
        try channel.pipeline.syncOperations.addHandler(
            ByteToMessageHandler(ControlFrameDecoder(connection: connection)))
        try channel.pipeline.syncOperations.addHandler(
            ControlHandler(
                connection: connection, onHello: { self.hello($0, on: connection) },
                onRefusal: { self.refused($0) }))
    }

    /// What to do with a connection's hello.
    enum HelloVerdict: Equatable {
        case accepted
        /// Not accepted, for a reason only corral-init can meet: close at once, it will redial.
        case closed(String)
        /// Refused: stop reading, and close at the hello deadline.
        case refused(String)
    }

    /// Judges a hello (nil: a malformed one). The first right one makes the connection the
    /// sandbox's; no later one displaces it while it lives.
    func hello(_ hello: ControlHello?, on connection: ControlConnection) -> HelloVerdict {
        guard let hello else { return .refused("a malformed hello") }
        guard hello.protocolVersion == ControlHello.protocolVersion else {
            return .refused(
                "corral-init \(hello.initVersion) speaks control protocol \(hello.protocolVersion), this host "
                    + "\(ControlHello.protocolVersion): its commands use the engine's exec until the sandbox is made anew"
            )
        }
        guard let offered = hello.key, key.matches(offered) else {
            return .refused("a hello without the sandbox's key")
        }
        let outcome = state.withLock { state -> (HelloVerdict, [CheckedContinuation<Void, Never>], Bool) in
            if state.closed { return (.closed("no longer listening"), [], false) }
            if let current = state.connection, current !== connection, current.channel.isActive {
                return (.closed("a hello while corral-init's connection is live"), [], false)
            }
            connection.authenticate()
            state.connection = connection
            defer {
                state.waiters.removeAll()
                state.keyIssued = false
            }
            return (.accepted, Array(state.waiters.values), state.keyIssued)
        }
        let (verdict, waiters, withdraw) = outcome
        if withdraw { unlink(keyFile) }
        for waiter in waiters { waiter.resume() }
        return verdict
    }

    /// Logs a refused connection: one line, at most one per `refusalLogInterval`, which counts
    /// the ones refused since the last. Never the key, nor anything the peer sent but a
    /// printable version string.
    func refused(_ reason: String) {
        let now = ContinuousClock.now
        let count: Int? = state.withLock { state in
            state.refusedSinceLogged += 1
            if let last = state.lastRefusalLogged, now - last < configuration.refusalLogInterval { return nil }
            state.lastRefusalLogged = now
            defer { state.refusedSinceLogged = 0 }
            return state.refusedSinceLogged
        }
        guard let count else { return }
        logger.info(
            "refused a connection to a sandbox's control socket",
            metadata: ["sandbox": "\(sandbox)", "reason": "\(reason)", "refused": "\(count)"])
    }

    /// corral-init's live connection, if any.
    var connection: ControlConnection? {
        state.withLock { state in
            if let current = state.connection, !current.channel.isActive { state.connection = nil }
            return state.connection
        }
    }

    /// Deletes `control.key` from the sandbox's directory, if it may still be there.
    func withdrawKey() {
        let issued = state.withLock { state in
            defer { state.keyIssued = false }
            return state.keyIssued
        }
        if issued { unlink(keyFile) }
    }

    /// Closes the listening socket and every connection, withdraws the key, and wakes the
    /// waiters; returns the socket's close.
    @discardableResult
    func shut() -> EventLoopFuture<Void>? {
        let (server, open, waiters) = state.withLock { state in
            defer {
                state.closed = true
                state.connection = nil
                state.open.removeAll()
                state.waiters.removeAll()
            }
            return (state.server, Array(state.open.values), Array(state.waiters.values))
        }
        let closed = server?.close()
        for channel in open { channel.close(promise: nil) }
        withdrawKey()
        for waiter in waiters { waiter.resume() }
        return closed
    }

    /// Returns once a connection is current, the listener is shut, or `timeout` passes.
    func waitForConnection(timeout: Duration) async {
        let key = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        func release() {
            state.withLock { state in
                state.over.insert(key)
                return state.waiters.removeValue(forKey: key)
            }?.resume()
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { waiter in
                    let ready = self.state.withLock { state in
                        if state.connection != nil || state.closed || state.over.contains(key) { return true }
                        state.waiters[key] = waiter
                        return false
                    }
                    if ready { waiter.resume() }
                }
            }
            group.addTask {
                // The timeout is the one thing waited for by the clock.
                try? await Task.sleep(for: timeout)
                release()
            }
            await group.next()
            group.cancelAll()
            release()
        }
        state.withLock { _ = $0.over.remove(key) }
    }
}
