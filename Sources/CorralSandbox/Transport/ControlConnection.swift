import ControlProtocol
import CorralCore
import DockerEngine
import NIOCore
import Synchronization

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

/// Cuts frames out of a connection's bytes. Before the hello is accepted, the first frame
/// must be a hello of at most `ControlHello.maxPayload` bytes; after, frames from the sandbox
/// carry at most `ControlFrameHeader.maxSandboxPayload`. A header that announces more is
/// refused before its payload is waited for, so a connection never holds more than one small
/// frame and a read.
struct ControlFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ControlFrame

    /// The first frame of a connection that has not said hello is not one.
    struct Refusal: Error {
        var reason: String
    }

    let connection: ControlConnection

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard
            let bytes = buffer.getBytes(
                at: buffer.readerIndex, length: min(buffer.readableBytes, ControlFrameHeader.size)),
            let header = ControlFrameHeader(parsing: bytes)
        else { return .needMoreData }
        if connection.phase != .authenticated {
            guard header.kind == .hello, header.length <= ControlHello.maxPayload else {
                throw Refusal(
                    reason: "a frame of kind \(header.rawKind) and \(header.length) bytes before corral-init's hello")
            }
        }
        guard header.isValid, let kind = header.kind, header.length <= ControlFrameHeader.maxSandboxPayload else {
            throw CorralError(.io, "malformed control frame (kind \(header.rawKind), \(header.length) bytes)")
        }
        guard buffer.readableBytes >= ControlFrameHeader.size + header.length else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: ControlFrameHeader.size)
        guard let payload = buffer.readSlice(length: header.length) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(ControlFrame(kind: kind, id: header.id, payload: payload)))
        return .continue
    }
}

/// Judges a connection's hello, then hands its frames to the commands waiting for them.
final class ControlHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ControlFrame
    typealias OutboundOut = ByteBuffer

    let connection: ControlConnection
    let onHello: @Sendable (ControlHello?) -> ControlListener.HelloVerdict
    let onRefusal: @Sendable (String) -> Void

    init(
        connection: ControlConnection, onHello: @escaping @Sendable (ControlHello?) -> ControlListener.HelloVerdict,
        onRefusal: @escaping @Sendable (String) -> Void
    ) {
        self.connection = connection
        self.onHello = onHello
        self.onRefusal = onRefusal
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch connection.phase {
        case .authenticated:
            // A second hello on corral-init's own connection means nothing.
            if frame.kind != .hello { connection.deliver(frame) }
        case .refused:
            return
        case .awaitingHello:
            guard frame.kind == .hello else { return refuse(context: context, "a frame before corral-init's hello") }
            switch onHello(ControlHello(decoding: frame.payload.readableBytesView)) {
            case .accepted:
                let welcome = ByteBuffer(bytes: Array(String(ControlHello.protocolVersion).utf8))
                context.writeAndFlush(
                    Self.wrapOutboundOut(ControlFrame(kind: .welcome, id: 0, payload: welcome).encoded), promise: nil)
            case .closed(let reason):
                onRefusal(reason)
                context.close(promise: nil)
            case .refused(let reason):
                refuse(context: context, reason)
            }
        }
    }

    /// Logs the refusal and stops reading: nothing more the peer sends is looked at, all it can
    /// fill is the kernel's socket buffer, and the hello deadline closes the connection.
    private func refuse(context: ChannelHandlerContext, _ reason: String) {
        connection.refuse()
        onRefusal(reason)
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.closed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch connection.phase {
        case .awaitingHello:
            refuse(context: context, (error as? ControlFrameDecoder.Refusal)?.reason ?? "\(error)")
        case .refused:
            return
        case .authenticated:
            context.close(promise: nil)
        }
    }
}

/// A control connection: first a peer that must prove itself, then corral-init's, with
/// commands multiplexed by id. Reads pause while more than `maxBufferedOutput` bytes of output
/// wait for their readers, so a flood cannot fill the host's memory.
final class ControlConnection: Sendable {
    typealias Stream = AsyncThrowingStream<ControlFrame, any Error>

    enum Phase: UInt8, AtomicRepresentable {
        case awaitingHello, refused, authenticated
    }

    let channel: any Channel
    let sandbox: SandboxID
    private let currentPhase = Atomic<Phase>(.awaitingHello)
    private let nextID = Atomic<UInt32>(0)
    /// Commands waiting for frames, with the bytes delivered to each and not yet consumed.
    private let waiting = Mutex<[UInt32: (continuation: Stream.Continuation, pending: Int)]>([:])
    private let buffered = Atomic<Int>(0)
    private let paused = Atomic<Bool>(false)
    let highWater: Int
    let lowWater: Int

    init(channel: any Channel, sandbox: SandboxID, maxBufferedOutput: Int) {
        self.channel = channel
        self.sandbox = sandbox
        self.highWater = max(maxBufferedOutput, ControlFrameHeader.maxSandboxPayload)
        self.lowWater = highWater / 4
    }

    var phase: Phase { currentPhase.load(ordering: .acquiring) }

    /// The peer proved to be corral-init.
    func authenticate() { currentPhase.store(.authenticated, ordering: .releasing) }

    /// The peer did not prove itself, and never will on this connection.
    func refuse() { currentPhase.store(.refused, ordering: .releasing) }

    func deliver(_ frame: ControlFrame) {
        let bytes = frame.payload.readableBytes
        let continuation = waiting.withLock { waiting -> Stream.Continuation? in
            guard let entry = waiting[frame.id] else { return nil }
            waiting[frame.id]?.pending += bytes
            return entry.continuation
        }
        guard let continuation else { return }
        if buffered.add(bytes, ordering: .relaxed).newValue > highWater, !paused.exchange(true, ordering: .relaxed) {
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
        if buffered.subtract(bytes, ordering: .relaxed).newValue < lowWater, paused.exchange(false, ordering: .relaxed)
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
