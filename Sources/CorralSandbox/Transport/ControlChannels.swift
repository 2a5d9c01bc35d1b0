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

/// The host's end of every sandbox's control connection (see corral-init's `ControlClient`
/// for the protocol): one listening socket per sandbox, `control.sock` in its gateway
/// directory, which corral-init dials as soon as it can. A command sent down it costs a
/// fork inside the sandbox and a few frames, instead of the engine's exec.
///
/// The process that makes a sandbox (or adopts it) listens for it; other processes, and any
/// sandbox whose corral-init has not dialled in, use the engine's exec. A connection that
/// drops takes its running commands with it (corral-init stops them), and the commands fail
/// with an error that says so; nothing is re-run.
public final class ControlChannels: Sendable {
    public static let socketName = "control.sock"

    /// One sandbox's socket, its current connection, and the tasks waiting for one.
    private final class Listener: Sendable {
        struct State {
            var connection: ControlConnection?
            var closed = false
            var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
            /// Waits that are over (timed out) whether or not their waiter registered yet.
            var over: Set<Int> = []
            var nextWaiter = 0
        }

        let server: any Channel
        let state = Mutex(State())
        init(server: any Channel) { self.server = server }

        var connection: ControlConnection? {
            state.withLock { state in
                if let current = state.connection, !current.channel.isActive { state.connection = nil }
                return state.connection
            }
        }

        /// Makes `connection` current and wakes the waiters; returns the one it replaced.
        func adopt(_ connection: ControlConnection) -> ControlConnection? {
            let (previous, waiters) = state.withLock { state in
                defer {
                    state.connection = connection
                    state.waiters.removeAll()
                }
                return (state.connection, Array(state.waiters.values))
            }
            for waiter in waiters { waiter.resume() }
            return previous
        }

        /// Closes the socket and the connection, and wakes the waiters.
        func shut() {
            server.close(promise: nil)
            let (connection, waiters) = state.withLock { state in
                defer {
                    state.closed = true
                    state.waiters.removeAll()
                }
                return (state.connection, Array(state.waiters.values))
            }
            connection?.channel.close(promise: nil)
            for waiter in waiters { waiter.resume() }
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

    private let group: any EventLoopGroup
    private let listeners = Mutex<[SandboxID: Listener]>([:])
    let logger: Logger

    public init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.group = group
        self.logger = logger
    }

    /// Listens on `directory/control.sock` for `sandbox`, replacing any socket file there.
    public func listen(_ sandbox: SandboxID, directory: URL) async throws {
        let path = directory.appendingPathComponent(Self.socketName).path
        let bindPath = UnixSocketPath(path)
        defer { withExtendedLifetime(bindPath) {} }
        let registry = self
        let server: any Channel
        do {
            server = try await ServerBootstrap(group: group)
                .serverChannelOption(ChannelOptions.backlog, value: 4)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let connection = ControlConnection(channel: channel, sandbox: sandbox)
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(ControlFrameDecoder()))
                        try channel.pipeline.syncOperations.addHandler(
                            ControlHandler(connection: connection) { registry.adopt(connection, for: sandbox) })
                    }
                }
                .bind(unixDomainSocketPath: bindPath.usable, cleanupExistingSocketFile: true).get()
        } catch {
            throw CorralError(.io, "cannot listen on the control socket \(path)", underlying: error)
        }
        // The sandbox's user is not the host's.
        guard chmod(path, 0o666) == 0 else {
            let reason = String(cString: strerror(errno))
            try? await server.close()
            throw CorralError(.io, "cannot set the mode of the control socket \(path): \(reason)")
        }
        let previous = listeners.withLock { listeners in
            let previous = listeners[sandbox]
            listeners[sandbox] = Listener(server: server)
            return previous
        }
        if let previous { previous.shut() }
    }

    /// The sandboxes this process listens for.
    public var listening: [SandboxID] { listeners.withLock { Array($0.keys) } }

    /// Whether this process listens for `sandbox`.
    public func isListening(_ sandbox: SandboxID) -> Bool {
        listeners.withLock { $0[sandbox] != nil }
    }

    /// Stops listening for `sandbox` and drops its connection.
    public func close(_ sandbox: SandboxID) {
        if let listener = listeners.withLock({ $0.removeValue(forKey: sandbox) }) { listener.shut() }
    }

    /// Stops listening for every sandbox.
    public func closeAll() {
        for listener in listeners.withLock({ listeners in
            defer { listeners.removeAll() }
            return Array(listeners.values)
        }) {
            listener.shut()
        }
    }

    /// The live connection of `sandbox`, when corral-init has dialled in.
    func connection(for sandbox: SandboxID) -> ControlConnection? {
        listeners.withLock { $0[sandbox] }?.connection
    }

    /// Whether corral-init of `sandbox` is connected to this process.
    public func isConnected(_ sandbox: SandboxID) -> Bool { connection(for: sandbox) != nil }

    /// Waits up to `timeout` for corral-init to dial in (woken by its hello, not by polling);
    /// true when it has.
    public func waitForConnection(_ sandbox: SandboxID, timeout: Duration) async -> Bool {
        guard let listener = listeners.withLock({ $0[sandbox] }) else { return false }
        await listener.waitForConnection(timeout: timeout)
        return listener.connection != nil
    }

    /// A connection that said hello becomes the sandbox's; the newest wins.
    private func adopt(_ connection: ControlConnection, for sandbox: SandboxID) {
        guard let listener = listeners.withLock({ $0[sandbox] }) else {
            connection.channel.close(promise: nil)
            return
        }
        if let previous = listener.adopt(connection), previous !== connection { previous.channel.close(promise: nil) }
    }
}

/// One frame of the control protocol (`ControlProtocol` has the format).
struct ControlFrame: Sendable {
    var kind: ControlFrameKind
    var id: UInt32
    var payload: ByteBuffer

    var encoded: ByteBuffer {
        var buffer = ByteBuffer(bytes: ControlFrameHeader(kind, id: id, length: payload.readableBytes).bytes)
        var payload = payload
        buffer.writeBuffer(&payload)
        return buffer
    }
}

struct ControlFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ControlFrame

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard
            let bytes = buffer.getBytes(
                at: buffer.readerIndex, length: min(buffer.readableBytes, ControlFrameHeader.size)),
            let header = ControlFrameHeader(parsing: bytes)
        else { return .needMoreData }
        guard header.isValid, let kind = header.kind else {
            throw CorralError(.io, "malformed control frame (kind \(header.rawKind), \(header.length) bytes)")
        }
        guard buffer.readableBytes >= ControlFrameHeader.size + header.length else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: ControlFrameHeader.size)
        guard let payload = buffer.readSlice(length: header.length) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(ControlFrame(kind: kind, id: header.id, payload: payload)))
        return .continue
    }
}

/// Hands frames to the commands waiting for them; a hello makes the connection current.
final class ControlHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ControlFrame

    let connection: ControlConnection
    let onHello: @Sendable () -> Void

    init(connection: ControlConnection, onHello: @escaping @Sendable () -> Void) {
        self.connection = connection
        self.onHello = onHello
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if frame.kind == .hello {
            onHello()
        } else {
            connection.deliver(frame)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.closed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// A live control connection: commands multiplexed by id. Reads pause while more than
/// `highWater` bytes of output wait for their readers, so a flood cannot fill the host's
/// memory.
final class ControlConnection: Sendable {
    typealias Stream = AsyncThrowingStream<ControlFrame, any Error>

    let channel: any Channel
    let sandbox: SandboxID
    private let nextID = Atomic<UInt32>(0)
    /// Commands waiting for frames, with the bytes delivered to each and not yet consumed.
    private let waiting = Mutex<[UInt32: (continuation: Stream.Continuation, pending: Int)]>([:])
    private let buffered = Atomic<Int>(0)
    private let paused = Atomic<Bool>(false)
    static let highWater = 4 << 20
    static let lowWater = 1 << 20

    init(channel: any Channel, sandbox: SandboxID) {
        self.channel = channel
        self.sandbox = sandbox
    }

    func deliver(_ frame: ControlFrame) {
        let bytes = frame.payload.readableBytes
        let continuation = waiting.withLock { waiting -> Stream.Continuation? in
            guard let entry = waiting[frame.id] else { return nil }
            waiting[frame.id]?.pending += bytes
            return entry.continuation
        }
        guard let continuation else { return }
        if buffered.add(bytes, ordering: .relaxed).newValue > Self.highWater, !paused.exchange(true, ordering: .relaxed)
        {
            channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        }
        continuation.yield(frame)
    }

    /// `bytes` of command `id`'s frames were read (or dropped with it): reading resumes once
    /// little is left waiting.
    private func consumed(_ bytes: Int, id: UInt32) {
        waiting.withLock { $0[id]?.pending -= bytes }
        release(bytes)
    }

    private func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        if buffered.subtract(bytes, ordering: .relaxed).newValue < Self.lowWater,
            paused.exchange(false, ordering: .relaxed)
        {
            channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
            channel.read()
        }
    }

    /// Stops waiting for command `id`; what was delivered to it and not read no longer counts.
    private func forget(_ id: UInt32) {
        let left = waiting.withLock { $0.removeValue(forKey: id)?.pending ?? 0 }
        release(left)
    }

    func closed() {
        let all = waiting.withLock { waiting in
            Array(waiting.values.map(\.continuation))
        }
        for continuation in all { continuation.finish() }
    }

    /// The command could not be sent: nothing ran, and the engine's exec may be used instead.
    struct NotSent: Error {}

    /// How a command on the connection ended: its exit status, or why it could not start.
    enum Ending {
        case exited(Int)
        case failed(String)
        /// The connection dropped while it ran.
        case lost
    }

    func run(
        arguments: [String], environment: [String: String], workingDirectory: String, timeout: Duration?,
        grace: Duration, output: (StdioStream, [UInt8]) async throws -> Void
    ) async throws -> Ending {
        let id = nextID.add(1, ordering: .relaxed).newValue
        let (stream, continuation) = Stream.makeStream()
        waiting.withLock { $0[id] = (continuation, 0) }
        defer { forget(id) }

        let request = ExecRequest(
            timeoutMilliseconds: timeout.map { UInt64(max($0.milliseconds.rounded(.up), 1)) } ?? 0,
            graceMilliseconds: UInt64(max(grace.milliseconds, 0)), workingDirectory: workingDirectory,
            arguments: arguments, environment: environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })
        guard let encoded = request.encoded() else {
            throw CorralError.invalidArgument("a command, its arguments and its environment cannot hold NUL bytes")
        }
        guard encoded.count <= ControlFrameHeader.maxPayload else {
            throw CorralError.invalidArgument(
                "the command and its environment are larger than \(ControlFrameHeader.maxPayload >> 20) MiB")
        }
        let payload = ByteBuffer(bytes: encoded)
        do {
            try await send(ControlFrame(kind: .exec, id: id, payload: payload))
        } catch {
            throw NotSent()
        }
        return try await withTaskCancellationHandler {
            for try await frame in stream {
                let bytes = frame.payload.readableBytes
                defer { consumed(bytes, id: id) }
                switch frame.kind {
                case .stdout, .stderr:
                    try Task.checkCancellation()
                    try await output(frame.kind == .stdout ? .stdout : .stderr, Array(buffer: frame.payload))
                case .exit:
                    let text = String(buffer: frame.payload)
                    guard let status = Int(text) else { return .failed("corral-init sent the status '\(text)'") }
                    return .exited(status)
                case .failed:
                    return .failed(String(buffer: frame.payload))
                default:
                    continue
                }
            }
            try Task.checkCancellation()
            return .lost
        } onCancel: {
            channel.writeAndFlush(ControlFrame(kind: .kill, id: id, payload: ByteBuffer()).encoded, promise: nil)
            continuation.finish()
        }
    }

    private func send(_ frame: ControlFrame) async throws {
        try await channel.writeAndFlush(frame.encoded)
    }
}
