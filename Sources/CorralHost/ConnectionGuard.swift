import CorralAPI
import CorralCore
import Foundation
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes
import Synchronization

/// The limits every connection of both listeners is held to before and between requests.
package struct ConnectionLimits: Sendable {
    /// A request head must arrive whole within this time: from the connection's start for
    /// the first request, from its first byte for each later one.
    package var headerTimeout: Duration
    /// The largest request head (request line and header fields); a larger one gets 431.
    package var maxHeadBytes: Int
}

/// The first handler of every connection's pipeline, on raw bytes, ahead of the HTTP decoder.
///
/// It holds a slow client to the head deadline (a head that dribbles in a line every few
/// seconds is cut off, with a 408), refuses an oversize head with a 431 and the usual JSON
/// error body (the decoder alone would answer 400 with no body), and tells a route when its
/// client has gone (`ClientPresence`). `RequestBoundaryObserver`, after the decoder, reports
/// where requests begin and end. Everything runs on the connection's event loop.
package final class ConnectionGuard: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    private enum Phase {
        /// Waiting for a head: `bytes` of it so far, the last bytes seen (a terminator may
        /// straddle two reads), and whether anything but blank lines came.
        case awaitingHead(bytes: Int, recent: [UInt8], sawContent: Bool)
        /// The head's terminator passed; the decoder is about to report the head.
        case headScanned
        /// The decoder reported the head; the body, if any, follows until the request ends.
        case inRequest
        case closing
    }

    private let limits: ConnectionLimits
    private let logger: Logger
    package let presence = ClientPresence()
    private var phase = Phase.awaitingHead(bytes: 0, recent: [], sawContent: false)
    private var deadline: Scheduled<Void>?
    /// Responses begun and not yet ended: a 408 or 431 is written only between responses.
    private var openResponses = 0

    package init(limits: ConnectionLimits, logger: Logger) {
        self.limits = limits
        self.logger = logger
    }

    // MARK: Lifecycle

    package func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armDeadline(context) }
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        cancelDeadline()
    }

    package func channelActive(context: ChannelHandlerContext) {
        armDeadline(context)
        context.fireChannelActive()
    }

    package func channelInactive(context: ChannelHandlerContext) {
        cancelDeadline()
        presence.markGone()
        context.fireChannelInactive()
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The server allows half-closure: a client that goes away shows as its input closing.
        if let event = event as? ChannelEvent, case .inputClosed = event { presence.markGone() }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: Bytes

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch phase {
        case .closing:
            return
        case .headScanned, .inRequest:
            context.fireChannelRead(data)
        case .awaitingHead(let bytes, let recent, var sawContent):
            let buffer = unwrapInboundIn(data)
            if bytes == 0 && deadline == nil { armDeadline(context) }
            let view = buffer.readableBytesView
            var window = recent
            var terminatorEnd: Int?
            for (offset, byte) in view.enumerated() {
                if byte != UInt8(ascii: "\r") && byte != UInt8(ascii: "\n") { sawContent = true }
                window.append(byte)
                if window.count > 4 { window.removeFirst() }
                if sawContent && (window == Self.crlfcrlf || window.suffix(2).elementsEqual([0x0A, 0x0A])) {
                    terminatorEnd = offset + 1
                    break
                }
                if bytes + offset + 1 > limits.maxHeadBytes { break }
            }
            if let terminatorEnd {
                guard bytes + terminatorEnd <= limits.maxHeadBytes else { return refuseOversizeHead(context) }
                phase = .headScanned
            } else {
                let total = bytes + view.count
                guard total <= limits.maxHeadBytes else { return refuseOversizeHead(context) }
                phase = .awaitingHead(bytes: total, recent: window, sawContent: sawContent)
            }
            context.fireChannelRead(data)
        }
    }

    private static let crlfcrlf: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A]

    // MARK: Reports from after the decoder

    package func headParsed() {
        cancelDeadline()
        openResponses += 1
        phase = .inRequest
    }

    package func requestEnded() {
        guard case .inRequest = phase else { return }
        // The next head's deadline starts with its first byte: a quiet keep-alive connection
        // is the idle timeout's business.
        phase = .awaitingHead(bytes: 0, recent: [], sawContent: false)
    }

    package func responseEnded() {
        openResponses = max(0, openResponses - 1)
    }

    // MARK: Refusals

    private func armDeadline(_ context: ChannelHandlerContext) {
        guard deadline == nil else { return }
        let timeout = limits.headerTimeout
        deadline = context.eventLoop.assumeIsolated().scheduleTask(
            in: .milliseconds(Int64(timeout.milliseconds.rounded(.up)))
        ) {
            self.deadline = nil
            self.headDeadlinePassed(context)
        }
    }

    private func cancelDeadline() {
        deadline?.cancel()
        deadline = nil
    }

    private func headDeadlinePassed(_ context: ChannelHandlerContext) {
        switch phase {
        case .awaitingHead(let bytes, _, _) where bytes == 0:
            // Nothing of a request came at all: close without a word.
            close(context, answer: nil)
        case .awaitingHead, .headScanned:
            logger.debug("a request head did not arrive in time; closing the connection")
            close(
                context,
                answer: (
                    408,
                    "Request Timeout",
                    APIErrorBody(
                        code: CorralError.Code.requestTimeout.rawValue,
                        message: "the request head did not arrive within \(limits.headerTimeout.compactDescription)",
                        hint: "send the request line and header fields at once")
                ))
        case .inRequest, .closing:
            break
        }
    }

    private func refuseOversizeHead(_ context: ChannelHandlerContext) {
        logger.debug("a request head is larger than allowed; answering 431")
        close(
            context,
            answer: (
                431,
                "Request Header Fields Too Large",
                APIErrorBody(
                    code: CorralError.Code.headersTooLarge.rawValue,
                    message:
                        "the request head is larger than \(ByteSize(bytes: Int64(limits.maxHeadBytes))): too many or too large header fields",
                    hint: "send fewer or smaller header fields")
            ))
    }

    /// Writes a last answer straight to the socket (when no response is under way) and closes.
    private func close(_ context: ChannelHandlerContext, answer: (Int, String, APIErrorBody)?) {
        phase = .closing
        cancelDeadline()
        if let (status, reason, body) = answer, openResponses == 0 {
            let json = (try? JSONEncoder().encode(body)) ?? Data()
            var buffer = context.channel.allocator.buffer(capacity: json.count + 160)
            buffer.writeString(
                "HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/json\r\nContent-Length: \(json.count)\r\nConnection: close\r\n\r\n"
            )
            buffer.writeBytes(json)
            context.writeAndFlush(wrapOutboundOut(buffer)).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        } else {
            context.close(promise: nil)
        }
    }
}

/// After the HTTP decoder: tells the connection's guard where requests begin and end.
package final class RequestBoundaryObserver: ChannelDuplexHandler, RemovableChannelHandler {
    package typealias InboundIn = HTTPRequestPart
    package typealias InboundOut = HTTPRequestPart
    package typealias OutboundIn = HTTPResponsePart
    package typealias OutboundOut = HTTPResponsePart

    private var connectionGuard: ConnectionGuard?

    package func handlerAdded(context: ChannelHandlerContext) {
        connectionGuard = try? context.pipeline.syncOperations.handler(type: ConnectionGuard.self)
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: connectionGuard?.headParsed()
        case .end: connectionGuard?.requestEnded()
        case .body: break
        }
        context.fireChannelRead(data)
    }

    package func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { connectionGuard?.responseEnded() }
        context.write(data, promise: promise)
    }
}

/// Whether a request's client is still connected, for work that should stop when it leaves
/// (a command it started). Safe to use from any task.
package final class ClientPresence: Sendable {
    private struct State {
        package var gone = false
        package var waiters: [UInt64: @Sendable () -> Void] = [:]
        package var next: UInt64 = 0
    }

    private let state = Mutex(State())

    package func markGone() {
        let waiters = state.withLock { state -> [@Sendable () -> Void] in
            guard !state.gone else { return [] }
            state.gone = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter() }
    }

    /// Calls `action` once the client has gone (at once if it has); the token removes it.
    package func onGone(_ action: @escaping @Sendable () -> Void) -> UInt64? {
        let token = state.withLock { state -> UInt64? in
            guard !state.gone else { return nil }
            state.next += 1
            state.waiters[state.next] = action
            return state.next
        }
        if token == nil { action() }
        return token
    }

    package func remove(_ token: UInt64?) {
        guard let token else { return }
        _ = state.withLock { $0.waiters.removeValue(forKey: token) }
    }

    /// The presence of the client on `channel`, or nil when the channel has no guard (the
    /// in-process router tests).
    package static func of(_ channel: (any Channel)?) async -> ClientPresence? {
        guard let channel else { return nil }
        return try? await channel.eventLoop.submit {
            // A stream a worker serves has its own (StreamPresenceHandler); a connection, the guard's.
            if let stream = try? channel.pipeline.syncOperations.handler(type: StreamPresenceHandler.self) {
                return stream.presence
            }
            return try channel.pipeline.syncOperations.handler(type: ConnectionGuard.self).presence
        }.get()
    }
}

/// Runs `body` in a task that is cancelled when the client goes away or the caller's task is
/// cancelled: a command a client started stops with its client. The sandbox layer turns the
/// cancellation into a kill of the command.
package func cancellingWhenClientLeaves<T: Sendable>(
    _ presence: ClientPresence?, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let task = Task { try await body() }
    let token = presence?.onGone { task.cancel() }
    defer { presence?.remove(token) }
    return try await withTaskCancellationHandler {
        try await task.value
    } onCancel: {
        task.cancel()
    }
}

/// Hummingbird's HTTP/1 channel with `ConnectionGuard` ahead of its decoder.
package struct GuardedHTTP1Channel: ServerChildChannel {
    package typealias Value = HTTP1Channel.Value
    package let http1: HTTP1Channel
    package let limits: ConnectionLimits

    package func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let limits = self.limits
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(ConnectionGuard(limits: limits, logger: logger))
        }.flatMap { http1.setup(channel: channel, logger: logger) }
    }

    package func handle(value: Value, logger: Logger) async {
        await http1.handle(value: value, logger: logger)
    }
}
