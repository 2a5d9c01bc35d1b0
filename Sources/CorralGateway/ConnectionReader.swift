import Foundation
import NIOCore

/// Reads one sandbox connection: request heads, bodies in either framing, and raw bytes
/// once the connection becomes a tunnel.
///
/// Owned by the connection's task and never shared: the NIO iterator inside may not cross
/// tasks. Body bytes are handed on as slices of the buffers NIO read, without copying.
struct ConnectionReader {
    private var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private var buffer: ByteBuffer
    private var ended = false
    let maxHeadBytes: Int

    init(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, allocator: ByteBufferAllocator, maxHeadBytes: Int) {
        self.iterator = inbound.makeAsyncIterator()
        self.buffer = allocator.buffer(capacity: 0)
        self.maxHeadBytes = maxHeadBytes
    }

    /// Reads more bytes into the buffer; false at the end of the stream.
    private mutating func fill() async throws -> Bool {
        guard !ended else { return false }
        guard var more = try await iterator.next() else {
            ended = true
            return false
        }
        if buffer.readableBytes == 0 {
            buffer = more
        } else {
            buffer.writeBuffer(&more)
        }
        return true
    }

    /// The next request head, or nil when the peer closed cleanly between requests.
    mutating func readHead() async throws -> ProxyRequestHead? {
        var scanned = 0
        while true {
            if let end = findHeadEnd(from: scanned) {
                guard end.headLength <= maxHeadBytes else {
                    throw HTTPFailure(431, "the request head is larger than \(maxHeadBytes) bytes")
                }
                let head = try buffer.withUnsafeReadableBytes { bytes in
                    try ProxyRequestHead(parsing: UnsafeRawBufferPointer(rebasing: bytes[0..<end.headLength]))
                }
                buffer.moveReaderIndex(forwardBy: end.total)
                return head
            }
            scanned = max(0, buffer.readableBytes - 3)
            guard buffer.readableBytes <= maxHeadBytes else {
                throw HTTPFailure(431, "the request head is larger than \(maxHeadBytes) bytes")
            }
            guard try await fill() else {
                if buffer.readableBytes == 0 { return nil }
                throw HTTPFailure(400, "the connection ended inside a request head")
            }
        }
    }

    /// Where the blank line after the head is: the head's length and the length with the
    /// blank line. Accepts bare LF as well as CRLF.
    private func findHeadEnd(from start: Int) -> (headLength: Int, total: Int)? {
        buffer.withUnsafeReadableBytes { bytes -> (Int, Int)? in
            var index = start
            while index < bytes.count {
                if bytes[index] == UInt8(ascii: "\n") {
                    if index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "\n") {
                        return (index, index + 2)
                    }
                    if index + 2 < bytes.count, bytes[index + 1] == UInt8(ascii: "\r"),
                        bytes[index + 2] == UInt8(ascii: "\n")
                    {
                        return (index, index + 3)
                    }
                }
                index += 1
            }
            return nil
        }
    }

    /// Bytes already read past the head, for a tunnel to send first.
    mutating func takeBuffered() -> ByteBuffer? {
        guard buffer.readableBytes > 0 else { return nil }
        return buffer.readSlice(length: buffer.readableBytes)
    }

    /// The next bytes as they arrive, for tunnels; nil at the end.
    mutating func nextRaw() async throws -> ByteBuffer? {
        if let buffered = takeBuffered() { return buffered }
        guard try await fill() else { return nil }
        return takeBuffered()
    }

    /// At most `limit` bytes of what is buffered or arrives next; nil at the end.
    private mutating func nextData(max limit: Int) async throws -> ByteBuffer? {
        if buffer.readableBytes == 0 {
            guard try await fill() else { return nil }
        }
        return buffer.readSlice(length: min(limit, buffer.readableBytes))
    }

    /// One line of a chunked body (size or trailer), without its line end.
    private mutating func readLine(limit: Int = 4096) async throws -> String {
        while true {
            let found = buffer.withUnsafeReadableBytes { bytes in bytes.firstIndex(of: UInt8(ascii: "\n")) }
            if let found {
                var line = buffer.readString(length: found) ?? ""
                buffer.moveReaderIndex(forwardBy: 1)
                if line.hasSuffix("\r") { line.removeLast() }
                return line
            }
            guard buffer.readableBytes <= limit else { throw HTTPFailure(400, "a chunk line is too long") }
            guard try await fill() else { throw HTTPFailure(400, "the connection ended inside a chunked body") }
        }
    }

    /// Hands the body's bytes to `sink` as they arrive, de-chunked. Throws `HTTPFailure` with
    /// 413 past `limit` bytes, 400 on bad framing or a body cut short.
    mutating func readBody(
        _ framing: ProxyRequestHead.BodyFraming, limit: Int64, _ sink: (ByteBuffer) async throws -> Void
    ) async throws {
        switch framing {
        case .none:
            return
        case .length(let length):
            guard length <= limit else { throw HTTPFailure(413, "the request body is larger than \(limit) bytes") }
            var remaining = length
            while remaining > 0 {
                guard let data = try await nextData(max: Int(min(remaining, Int64(Int.max)))) else {
                    throw HTTPFailure(400, "the connection ended inside the request body")
                }
                remaining -= Int64(data.readableBytes)
                try await sink(data)
            }
        case .chunked:
            var total: Int64 = 0
            while true {
                let line = try await readLine()
                let sizeText =
                    line.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
                guard !sizeText.isEmpty, sizeText.count <= 15, let size = Int64(sizeText, radix: 16), size >= 0 else {
                    throw HTTPFailure(400, "a chunk size is not a hexadecimal number")
                }
                if size == 0 {
                    while try await !readLine().isEmpty {}  // trailers, ignored
                    return
                }
                total += size
                guard total <= limit else { throw HTTPFailure(413, "the request body is larger than \(limit) bytes") }
                var remaining = size
                while remaining > 0 {
                    guard let data = try await nextData(max: Int(remaining)) else {
                        throw HTTPFailure(400, "the connection ended inside a chunk")
                    }
                    remaining -= Int64(data.readableBytes)
                    try await sink(data)
                }
                guard try await readLine().isEmpty else { throw HTTPFailure(400, "a chunk is longer than its size") }
            }
        }
    }

    /// Reads and drops a body, up to `limit` bytes; false when it was larger or malformed.
    mutating func discardBody(_ framing: ProxyRequestHead.BodyFraming, limit: Int64) async -> Bool {
        do {
            try await readBody(framing, limit: limit) { _ in }
            return true
        } catch {
            return false
        }
    }
}
