import CorralCore
import NIOCore

/// The worker link's handshake as bytes: one HTTP/1.1 request (worker to control plane) and one
/// answer, before the connection turns into HTTP/2. Read and written by hand rather than through
/// NIO's HTTP/1 codec, because the bytes that follow a 101 are HTTP/2 and must reach the HTTP/2
/// handler untouched: `HeadReader` keeps whatever arrives after the head and hands it on when it
/// is removed.
package struct LinkHead: Sendable {
    /// `GET /v1/workers/connect HTTP/1.1` or `HTTP/1.1 101 Switching Protocols`, split on spaces
    /// (the reason phrase stays whole).
    package var startLine: [String]
    package var headers: [(name: String, value: String)]
    /// An answer's body (an error's JSON); empty for a request.
    package var body: [UInt8] = []

    package init(startLine: [String], headers: [(name: String, value: String)], body: [UInt8] = []) {
        self.startLine = startLine
        self.headers = headers
        self.body = body
    }

    package static let maxHeadBytes = 16 << 10
    package static let maxBodyBytes = 16 << 10

    package func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// A response's status, or nil for a request.
    package var status: Int? {
        guard startLine.count >= 2, startLine[0].hasPrefix("HTTP/1.") else { return nil }
        return Int(startLine[1])
    }

    /// Parses the bytes up to (not including) the blank line.
    package static func parse(_ bytes: [UInt8]) -> LinkHead? {
        guard let text = String(validating: bytes, as: UTF8.self) else { return nil }
        var lines = text.components(separatedBy: "\r\n")
        guard !lines.isEmpty else { return nil }
        let first = lines.removeFirst()
        let parts = first.split(separator: " ", maxSplits: 2).map(String.init)
        guard parts.count >= 2 else { return nil }
        var headers: [(String, String)] = []
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { return nil }
            headers.append(
                (
                    String(line[..<colon]).trimmingCharacters(in: .whitespaces),
                    String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
                ))
        }
        return LinkHead(startLine: parts, headers: headers)
    }

    /// The head (and body) as bytes to write.
    package func serialized() -> ByteBuffer {
        var text = startLine.joined(separator: " ") + "\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        text += "\r\n"
        var buffer = ByteBuffer(string: text)
        buffer.writeBytes(body)
        return buffer
    }
}

/// Reads one head (and, for an answer with Content-Length, its body) and completes `promise`
/// with it. Bytes after it are kept and passed on, in order, when the handler is removed: by
/// then the HTTP/2 handler sits behind it. A head larger than `LinkHead.maxHeadBytes`, or a
/// connection that ends first, fails the promise.
package final class LinkHeadReader: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer

    private let promise: EventLoopPromise<LinkHead>
    private let readsBody: Bool
    private var buffer = ByteBuffer()
    private var head: LinkHead?
    private var done = false

    package init(promise: EventLoopPromise<LinkHead>, readsBody: Bool) {
        self.promise = promise
        self.readsBody = readsBody
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        guard !done else { return }
        if head == nil {
            let view = buffer.readableBytesView
            guard let end = Self.headEnd(view) else {
                if buffer.readableBytes > LinkHead.maxHeadBytes { fail(context, "the handshake's head is too large") }
                return
            }
            let headBytes = buffer.readBytes(length: end - view.startIndex) ?? []
            buffer.moveReaderIndex(forwardBy: 4)
            guard let parsed = LinkHead.parse(headBytes) else { return fail(context, "the handshake is not HTTP/1.1") }
            head = parsed
        }
        guard var head else { return }
        if readsBody, head.status != 101, let length = head.header("Content-Length").flatMap(Int.init), length > 0 {
            guard length <= LinkHead.maxBodyBytes else { return fail(context, "the handshake's answer is too large") }
            guard buffer.readableBytes >= length else { return }
            head.body = buffer.readBytes(length: length) ?? []
        }
        done = true
        promise.succeed(head)
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        if !done {
            done = true
            promise.fail(CorralError(.unavailable, "the worker link closed during its handshake"))
        }
        if buffer.readableBytes > 0 {
            let rest = buffer
            buffer = ByteBuffer()
            context.fireChannelRead(wrapInboundOut(rest))
        }
    }

    package func channelInactive(context: ChannelHandlerContext) {
        if !done { fail(context, "the other end closed the connection during the handshake") }
        context.fireChannelInactive()
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done {
            done = true
            promise.fail(error)
            context.close(promise: nil)
        } else {
            context.fireErrorCaught(error)
        }
    }

    private func fail(_ context: ChannelHandlerContext, _ message: String) {
        done = true
        promise.fail(CorralError(.invalidArgument, message))
        context.close(promise: nil)
    }

    private static func headEnd(_ view: ByteBufferView) -> Int? {
        guard view.count >= 4 else { return nil }
        var index = view.startIndex
        while index + 3 < view.endIndex {
            if view[index] == 13, view[index + 1] == 10, view[index + 2] == 13, view[index + 3] == 10 { return index }
            index += 1
        }
        return nil
    }
}
