import ControlProtocol
import CorralCore
import DockerEngine
import Logging
import NIOCore
import Synchronization

/// One frame of the control protocol (`ControlProtocol` has the format).
struct ControlFrame: Sendable {
    var kind: ControlFrameKind
    var id: UInt32
    var payload: ByteBuffer

    var encoded: ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(ControlFrameHeader.size + payload.readableBytes)
        buffer.writeBytes(ControlFrameHeader(kind, id: id, length: payload.readableBytes).bytes)
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
        guard header.isValid, let kind = header.kind, kind.fromSandbox,
            header.length <= ControlFrameHeader.maxSandboxPayload
        else {
            throw CorralError(.io, "malformed control frame (kind \(header.rawKind), \(header.length) bytes)")
        }
        guard buffer.readableBytes >= ControlFrameHeader.size + header.length else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: ControlFrameHeader.size)
        guard let payload = buffer.readSlice(length: header.length) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(ControlFrame(kind: kind, id: header.id, payload: payload)))
        return .continue
    }
}

/// Judges a connection's hello, then hands its frames to the streams waiting for them.
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
            if frame.kind != .hello, !connection.deliver(frame) {
                onRefusal("corral-init sent more than a stream's window; closing its connection")
                context.close(promise: nil)
            }
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

/// A control connection: first a peer that must prove itself, then corral-init's, carrying
/// streams multiplexed by id, each with its own flow control window (see `ControlProtocol`).
///
/// Memory: every stream's output window comes out of the connection's `budget`; a stream
/// never holds more than its window (corral-init sends no more, and a connection whose peer
/// does is closed), so the connection never holds more than the budget, however slowly its
/// callers read, plus `minimumWindow` for each stream opened past it. A stream opened while the
/// budget is spent starts with that minimum (16 KiB) and grows as other streams close. So one
/// stalled reader stalls its own command only, and commands that hold their windows without
/// writing (64 `sleep`s took the whole 16 MiB) do not keep a new command from answering.
final class ControlConnection: Sendable {
    enum Phase: UInt8, AtomicRepresentable {
        case awaitingHello, refused, authenticated
    }

    let channel: any Channel
    let sandbox: SandboxID
    /// The output windows of all streams together.
    let budget: Int
    /// A stream's window when the budget allows.
    let streamWindow: Int
    /// Every stream's window at least, budget or not: at most `ControlLimits.maxRunning` of
    /// them (16 MiB) beyond the budget.
    static let minimumWindow = 16 << 10
    private let currentPhase = Atomic<Phase>(.awaitingHello)

    private struct State {
        var streams: [UInt32: ControlStream] = [:]
        var nextID: UInt32 = 0
        /// The windows of open streams, added up.
        var granted = 0
        /// Streams whose window is below `streamWindow`, in the order they opened.
        var starving: [UInt32] = []
        var closed = false
    }

    private let state = Mutex(State())

    init(channel: any Channel, sandbox: SandboxID, budget: Int, streamWindow: Int) {
        self.channel = channel
        self.sandbox = sandbox
        self.streamWindow = min(max(streamWindow, 1 << 10), ControlLimits.maxOutputWindow)
        self.budget = max(budget, self.streamWindow)
    }

    var phase: Phase { currentPhase.load(ordering: .acquiring) }

    /// The peer proved to be corral-init.
    func authenticate() { currentPhase.store(.authenticated, ordering: .releasing) }

    /// The peer did not prove itself, and never will on this connection.
    func refuse() { currentPhase.store(.refused, ordering: .releasing) }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// A new stream, with the window the budget allows; nil once the connection closed.
    func openStream(sink: any ControlStreamSink, takesInput: Bool) -> ControlStream? {
        state.withLock { state -> ControlStream? in
            guard !state.closed else { return nil }
            var id = state.nextID &+ 1
            while id == 0 || state.streams[id] != nil { id &+= 1 }
            state.nextID = id
            let window = min(streamWindow, max(Self.minimumWindow, budget - state.granted))
            state.granted += window
            if window < streamWindow { state.starving.append(id) }
            let stream = ControlStream(
                id: id, connection: self, window: window, sink: sink,
                inputCredit: takesInput ? ControlLimits.inputWindow : 0)
            state.streams[id] = stream
            return stream
        }
    }

    /// Hands a frame to its stream; false when the peer broke the protocol (more output
    /// than the stream's window), and the connection must go.
    func deliver(_ frame: ControlFrame) -> Bool {
        guard let stream = state.withLock({ $0.streams[frame.id] }) else { return true }
        return stream.receive(frame)
    }

    /// Forgets a stream whose exchange is over; its window goes to streams still short of one.
    func forget(_ stream: ControlStream) {
        let grants = state.withLock { state -> [(ControlStream, Int)] in
            guard state.streams[stream.id] === stream else { return [] }
            state.streams[stream.id] = nil
            state.starving.removeAll { $0 == stream.id }
            state.granted -= stream.window
            var grants: [(ControlStream, Int)] = []
            while let first = state.starving.first, state.granted < budget {
                guard let starving = state.streams[first] else {
                    state.starving.removeFirst()
                    continue
                }
                let grant = min(streamWindow - starving.window, budget - state.granted)
                state.granted += grant
                grants.append((starving, grant))
                if starving.window + grant >= streamWindow { state.starving.removeFirst() } else { break }
            }
            return grants
        }
        for (starving, grant) in grants { starving.grow(by: grant) }
    }

    /// Sends a frame; `sent` learns whether the channel took it.
    func send(
        _ kind: ControlFrameKind, id: UInt32, payload: ByteBuffer = ByteBuffer(),
        sent: (@Sendable (Bool) -> Void)? = nil
    ) {
        let frame = ControlFrame(kind: kind, id: id, payload: payload).encoded
        guard let sent else {
            channel.writeAndFlush(frame, promise: nil)
            return
        }
        let promise = channel.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenComplete { result in
            if case .success = result { sent(true) } else { sent(false) }
        }
        channel.writeAndFlush(frame, promise: promise)
    }

    /// The connection is gone: every stream hears it.
    func closed() {
        let streams = state.withLock { state -> [ControlStream] in
            state.closed = true
            defer { state.streams.removeAll() }
            return Array(state.streams.values)
        }
        for stream in streams { stream.connectionClosed() }
    }
}

/// Where a stream's frames go, on the connection's event loop: a command's inbox, or a file
/// operation's.
protocol ControlStreamSink: Sendable {
    /// Takes a frame (credit and input frames are handled before it); returns the output
    /// bytes it counts as consumed already (it drops them), to be credited back at once.
    func receive(_ frame: ControlFrame, on stream: ControlStream) -> Int
    /// The connection dropped (or the frame that opened the stream could not be sent).
    func connectionClosed(sent: Bool)
}

/// One request's stream on a control connection: its output window and what it holds, its
/// input credit, and its sink.
final class ControlStream: Sendable {
    let id: UInt32
    let connection: ControlConnection
    private let sink: any ControlStreamSink

    private struct State {
        var window: Int
        /// Output received and not yet consumed.
        var held = 0
        /// Output consumed and not yet credited back.
        var unreported = 0
        var inputCredit: Int
        var inputWaiter: CheckedContinuation<Void, any Error>?
        /// Why input can no longer be sent, once it cannot.
        var inputRefusal: CorralError?
        var over = false
    }

    private let state: Mutex<State>

    init(id: UInt32, connection: ControlConnection, window: Int, sink: any ControlStreamSink, inputCredit: Int) {
        self.id = id
        self.connection = connection
        self.sink = sink
        self.state = Mutex(State(window: window, inputCredit: inputCredit))
    }

    var window: Int { state.withLock { $0.window } }

    /// Sends the request that opens the stream. Should the channel not take it, the sink hears
    /// that nothing was sent.
    func open(_ kind: ControlFrameKind, payload: [UInt8]) {
        connection.send(kind, id: id, payload: ByteBuffer(bytes: payload)) { [self] sent in
            if !sent { closeLocally(sent: false) }
        }
    }

    fileprivate func receive(_ frame: ControlFrame) -> Bool {
        let bytes = frame.payload.readableBytes
        switch frame.kind {
        case .inputCredit:
            if let credit = ControlCredit.decode(frame.payload.readableBytesView) { addInputCredit(credit) }
            return true
        case .inputClosed:
            refuseInput(CorralError(.conflict, "the command closed its stdin: nothing more can be written to it"))
            return true
        default:
            break
        }
        if frame.kind.countsAgainstWindow {
            // What corral-init may have sent is the window less what is held and what was
            // consumed but not credited back yet.
            let within = state.withLock { state -> Bool in
                state.held += bytes
                return state.held + state.unreported <= state.window
            }
            guard within else { return false }
        }
        // The last frame of an exchange: the stream is over before its caller hears of it.
        let last = frame.kind == .exit || frame.kind == .failed || frame.kind == .done
        if last { finish() }
        let dropped = sink.receive(frame, on: self)
        if dropped > 0 && !last { consumed(dropped) }
        return true
    }

    /// The caller took `bytes` of output: once enough add up, corral-init may send more.
    func consumed(_ bytes: Int) {
        guard bytes > 0 else { return }
        let credit = state.withLock { state -> Int in
            state.held -= bytes
            state.unreported += bytes
            guard !state.over, state.unreported >= max(min(state.window / 4, 64 << 10), 1) else { return 0 }
            defer { state.unreported = 0 }
            return state.unreported
        }
        if credit > 0 { connection.send(.credit, id: id, payload: ByteBuffer(bytes: ControlCredit.encode(credit))) }
    }

    /// The connection's budget grew this stream's window.
    func grow(by bytes: Int) {
        let over = state.withLock { state -> Bool in
            state.window += bytes
            return state.over
        }
        if !over { connection.send(.credit, id: id, payload: ByteBuffer(bytes: ControlCredit.encode(bytes))) }
    }

    // MARK: Input

    /// Sends input (a command's stdin, a file's bytes) within the stream's credit, waiting
    /// for more when it runs out. Throws once input is refused or the stream is over.
    func sendInput(_ bytes: [UInt8]) async throws {
        var offset = 0
        while offset < bytes.count {
            let allowed = try await takeInputCredit(upTo: min(bytes.count - offset, 64 << 10))
            connection.send(.input, id: id, payload: ByteBuffer(bytes: bytes[offset..<(offset + allowed)]))
            offset += allowed
        }
    }

    /// Ends the input (EOF).
    func endInput() throws {
        if let refusal = state.withLock({ $0.inputRefusal }) { throw refusal }
        connection.send(.inputEnd, id: id)
    }

    private func takeInputCredit(upTo wanted: Int) async throws -> Int {
        while true {
            let taken = try state.withLock { state -> Int in
                if let refusal = state.inputRefusal { throw refusal }
                let taken = min(wanted, state.inputCredit)
                state.inputCredit -= taken
                return taken
            }
            if taken > 0 { return taken }
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<Void, any Error>) in
                    let resumeNow = state.withLock { state -> Bool in
                        if state.inputRefusal != nil || state.inputCredit > 0 || Task.isCancelled { return true }
                        state.inputWaiter = waiter
                        return false
                    }
                    if resumeNow { waiter.resume() }
                }
            } onCancel: {
                state.withLock { state in
                    defer { state.inputWaiter = nil }
                    return state.inputWaiter
                }?.resume(throwing: CancellationError())
            }
            try Task.checkCancellation()
        }
    }

    private func addInputCredit(_ bytes: Int) {
        state.withLock { state in
            state.inputCredit += bytes
            defer { state.inputWaiter = nil }
            return state.inputWaiter
        }?.resume()
    }

    /// No more input may be sent, for `reason`.
    func refuseInput(_ reason: CorralError) {
        state.withLock { state in
            if state.inputRefusal == nil { state.inputRefusal = reason }
            defer { state.inputWaiter = nil }
            return state.inputWaiter
        }?.resume(throwing: reason)
    }

    // MARK: Ending

    /// The exchange is over (its last frame came): the connection forgets the stream.
    private func finish() {
        let first = state.withLock { state -> Bool in
            defer { state.over = true }
            return !state.over
        }
        guard first else { return }
        refuseInput(CorralError(.conflict, "the stream has ended"))
        connection.forget(self)
    }

    /// The caller has gone: tell corral-init (which stops a command its caller started, unless
    /// it was detached, and abandons a file operation) and forget the stream.
    func cancel() {
        let first = state.withLock { state -> Bool in
            defer { state.over = true }
            return !state.over
        }
        guard first else { return }
        connection.send(.cancel, id: id)
        refuseInput(CorralError(.cancelled, "the stream was cancelled"))
        connection.forget(self)
    }

    /// The connection dropped, or the opening frame was not sent.
    fileprivate func connectionClosed() { closeLocally(sent: true) }

    private func closeLocally(sent: Bool) {
        let first = state.withLock { state -> Bool in
            defer { state.over = true }
            return !state.over
        }
        guard first else { return }
        refuseInput(CorralError(.unavailable, "the control connection closed"))
        connection.forget(self)
        sink.connectionClosed(sent: sent)
    }
}
