import NIOCore
import NIOHTTP1

/// Reads one sandbox connection as NIOHTTP1's decoder hands it over: request heads, body
/// parts until each request's end, and raw bytes once the connection becomes a tunnel.
///
/// Owned by the connection's task and never shared: the NIO iterator inside may not cross
/// tasks. The decoder runs in the channel's pipeline (`GatewaySocket` adds it under
/// `decoderName`); back-pressure is the async channel's: while parts wait unread, the channel
/// stops reading from the socket.
struct ConnectionReader {
    /// The decoder's name in the pipeline, so that a tunnel can take it out.
    static let decoderName = "corral.http-decoder"

    private enum Phase {
        /// Between requests: the next part is a head.
        case idle
        /// Inside a request: body parts, then its end.
        case body
        /// A tunnel: every part is raw bytes as a `.body`.
        case raw
    }

    private var iterator: NIOAsyncChannelInboundStream<HTTPServerRequestPart>.AsyncIterator
    private var phase = Phase.idle
    private let channel: any Channel
    let maxHeadBytes: Int

    init(_ inbound: NIOAsyncChannelInboundStream<HTTPServerRequestPart>, channel: any Channel, maxHeadBytes: Int) {
        self.iterator = inbound.makeAsyncIterator()
        self.channel = channel
        self.maxHeadBytes = maxHeadBytes
    }

    /// The decoder for a gateway connection: heads, and any single header field, limited to
    /// `maxHeadBytes` (431); what is left once a CONNECT or an upgrade ends HTTP is passed on
    /// as bytes.
    static func makeDecoder(maxHeadBytes: Int) -> ByteToMessageHandler<HTTPRequestDecoder> {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = maxHeadBytes
        limits.maxHeaderListSize = maxHeadBytes
        // The buffer holds only what the decoder has not consumed yet: a partial request line
        // or field while a head arrives, so this bounds the request line too. Bodies pass
        // through as they are parsed.
        return ByteToMessageHandler(
            HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes, limitConfiguration: limits),
            maximumBufferSize: maxHeadBytes)
    }

    /// The next part; decoding errors become `HTTPFailure`s.
    private mutating func next() async throws -> HTTPServerRequestPart? {
        do {
            return try await iterator.next()
        } catch let error as HTTPFailure {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            guard phase != .raw else { throw error }
            throw HTTPFailure(decoding: error, maxHeadBytes: maxHeadBytes)
        }
    }

    /// The next request head, or nil when the peer closed cleanly between requests. What is
    /// left of the previous request's body (up to 1 MiB) is read and dropped first.
    mutating func readHead() async throws -> ProxyRequestHead? {
        if phase == .body {
            guard await discardBody(limit: 1 << 20) else {
                throw HTTPFailure(400, "the previous request's body was not read and is too large to skip")
            }
        }
        guard let part = try await next() else { return nil }
        guard case .head(let head) = part else {
            throw HTTPFailure(400, "a request body arrived where a request head belongs")
        }
        phase = .body
        return try ProxyRequestHead(head)
    }

    /// Hands the body's bytes to `sink` as they arrive, de-chunked. Throws `HTTPFailure` with
    /// 413 past `limit` bytes (at once when Content-Length says so), 400 on a body cut short.
    mutating func readBody(
        _ framing: ProxyRequestHead.BodyFraming, limit: Int64, _ sink: (ByteBuffer) async throws -> Void
    ) async throws {
        guard phase == .body else { return }
        if case .length(let length) = framing, length > limit {
            throw HTTPFailure(413, "the request body is larger than \(limit) bytes")
        }
        var total: Int64 = 0
        while true {
            guard let part = try await next() else {
                throw HTTPFailure(400, "the connection ended inside the request body")
            }
            switch part {
            case .body(let bytes):
                total += Int64(bytes.readableBytes)
                guard total <= limit else {
                    throw HTTPFailure(413, "the request body is larger than \(limit) bytes")
                }
                try await sink(bytes)
            case .end:
                phase = .idle
                return
            case .head:
                throw HTTPFailure(400, "a request head arrived inside a request body")
            }
        }
    }

    /// Reads and drops a body, up to `limit` bytes; false when it was larger or malformed.
    mutating func discardBody(_ framing: ProxyRequestHead.BodyFraming = .none, limit: Int64) async -> Bool {
        do {
            try await readBody(framing, limit: limit) { _ in }
            return true
        } catch {
            return false
        }
    }

    /// Turns the connection into a byte stream after a CONNECT: the request's end is read,
    /// then the decoder leaves the pipeline and hands on what it held past the head, and
    /// every later read comes through as it is. After this, use only `nextRaw`.
    mutating func startTunnel() async throws {
        if phase == .body {
            guard await discardBody(limit: 0) else {
                throw HTTPFailure(400, "a CONNECT request carries no body")
            }
        }
        let channel = self.channel
        try await channel.eventLoop.flatSubmit {
            let pipeline = channel.pipeline.syncOperations
            let removed = channel.eventLoop.makePromise(of: Void.self)
            do {
                let decoder = try pipeline.context(name: Self.decoderName)
                try pipeline.addHandler(RawBytesAsBody(), position: .after(decoder.handler))
                pipeline.removeHandler(context: decoder, promise: removed)
            } catch {
                removed.fail(error)
            }
            // The decoder hands its leftovers on while it leaves, outside any read: a read
            // complete makes the async channel deliver them now rather than with the next read.
            return removed.futureResult.map { channel.pipeline.fireChannelReadComplete() }
        }.get()
        phase = .raw
    }

    /// The next bytes of a tunnel as they arrive; nil at the end.
    mutating func nextRaw() async throws -> ByteBuffer? {
        while let part = try await next() {
            if case .body(let bytes) = part { return bytes }
        }
        return nil
    }
}

/// Once the decoder has left a tunnel's pipeline: the socket's bytes as `.body` parts, so that
/// the async channel keeps one element type from the first request to the last byte.
final class RawBytesAsBody: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(wrapInboundOut(.body(unwrapInboundIn(data))))
    }
}
