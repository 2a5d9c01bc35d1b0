import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix

/// HTTP/2 as corral's worker link carries it: the worker dials, and the control plane, which
/// accepted the connection, is the HTTP/2 client on it (roles reversed); each call is a stream.
///
/// Corral reaches HTTP/2 through an HTTP/1.1 upgrade; here both ends start HTTP/2 at once (h2c,
/// no TLS). The settings are WorkerLinkClient's and WorkerAgent's. The streams speak NIO's
/// HTTP/1 types through `HTTP2FramePayloadToHTTP1*Codec` where corral uses swift-http-types'
/// codec from swift-nio-extras; the worker answers from plain handlers, not Hummingbird's router.
final class HTTP2Link: LinkClient {
    typealias CallStream = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
    typealias ServedStream = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

    /// The control plane's end of the connection, as accepted.
    private struct Accepted: Sendable {
        let channel: any Channel
        let multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<Void>
    }

    let name = "h2-reversed"
    private let channel: any Channel
    private let multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<Void>
    private let worker: Task<Void, Never>
    private let counter: ByteCounter
    private let received: ByteCounter

    /// The largest HTTP/2 frame either end takes (WorkerAgent.maxFrameSize).
    static let maxFrameSize = 1 << 20

    /// The control plane's settings, as WorkerLinkClient sets them.
    static var controlPlaneConfiguration: NIOHTTP2Handler.Configuration {
        var configuration = NIOHTTP2Handler.Configuration()
        configuration.connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 1000),
            HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 1 << 16),
            HTTP2Setting(parameter: .maxFrameSize, value: maxFrameSize),
        ]
        configuration.connection.targetWindowSize = 16 << 20
        configuration.stream.targetWindowSize = 1 << 20
        return configuration
    }

    /// The worker's settings: swift-nio-http2's defaults (Hummingbird's HTTP/2 channel keeps them)
    /// with what WorkerAgent announces on top, 4096 streams and 1 MiB frames.
    static var workerConfiguration: NIOHTTP2Handler.Configuration {
        var configuration = NIOHTTP2Handler.Configuration()
        configuration.connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 4096),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 1 << 14),
            HTTP2Setting(parameter: .maxFrameSize, value: maxFrameSize),
        ]
        return configuration
    }

    private init(
        channel: any Channel, multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<Void>,
        worker: Task<Void, Never>, counter: ByteCounter, received: ByteCounter
    ) {
        self.channel = channel
        self.multiplexer = multiplexer
        self.worker = worker
        self.counter = counter
        self.received = received
    }

    /// Listens on 127.0.0.1 (the control plane, on `controlPlane`), has the worker dial it (on
    /// `worker`) and returns once the connection is up both ways.
    static func start(controlPlane: any EventLoopGroup, worker: any EventLoopGroup) async throws -> HTTP2Link {
        let received = ByteCounter()
        let listener = try await ServerBootstrap(group: controlPlane)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ReceivedBytes(received))
                    let multiplexer = try channel.pipeline.syncOperations.configureAsyncHTTP2Pipeline(
                        mode: .client, configuration: controlPlaneConfiguration
                    ) { stream in
                        // The worker opens no streams of its own.
                        stream.close()
                    }
                    return Accepted(channel: channel, multiplexer: multiplexer)
                }
            }
        guard let port = listener.channel.localAddress?.port else {
            throw BenchError("the listener has no port")
        }
        let counter = ByteCounter()
        let served = try await ClientBootstrap(group: worker)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureAsyncHTTP2Pipeline(
                        mode: .server, configuration: workerConfiguration
                    ) { stream in
                        stream.eventLoop.makeCompletedFuture {
                            try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                            return try ServedStream(wrappingChannelSynchronously: stream)
                        }
                    }
                }
            }
        let workerTask = Task {
            await withDiscardingTaskGroup { group in
                do {
                    for try await stream in served.inbound {
                        group.addTask { await serve(stream, counter: counter) }
                    }
                } catch {
                    // The connection is gone: the link is over.
                }
            }
        }
        let accepted = try await listener.executeThenClose { inbound in
            var connections = inbound.makeAsyncIterator()
            guard let first = try await connections.next() else {
                throw BenchError("the listener closed before the worker dialled")
            }
            return first
        }
        return HTTP2Link(
            channel: accepted.channel, multiplexer: accepted.multiplexer, worker: workerTask, counter: counter,
            received: received)
    }

    var stalledBytesWritten: Int { counter.value }

    var receivedBytes: Int { received.value }

    func shutdown() async {
        try? await channel.close()
        await worker.value
    }

    // MARK: The control plane's calls

    private func open() async throws -> CallStream {
        try await multiplexer.openStream { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http))
                return try CallStream(wrappingChannelSynchronously: channel)
            }
        }
    }

    private static func request(_ method: HTTPMethod, _ uri: String, length: Int = 0) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri)
        head.headers.add(name: "host", value: "worker")
        head.headers.add(name: "content-length", value: String(length))
        return head
    }

    private static func check(_ head: HTTPResponseHead) throws {
        guard head.status == .ok else { throw BenchError("the worker answered \(head.status.code)") }
    }

    func echo(_ body: ByteBuffer) async throws -> ByteBuffer {
        let stream = try await open()
        return try await stream.executeThenClose { inbound, outbound in
            // As WorkerLinkClient writes a call: the head, the body, the end, each a write.
            try await outbound.write(.head(Self.request(.POST, "/echo", length: body.readableBytes)))
            try await outbound.write(.body(.byteBuffer(body)))
            try await outbound.write(.end(nil))
            var answer = ByteBuffer()
            for try await part in inbound {
                switch part {
                case .head(let head): try Self.check(head)
                case .body(var chunk): answer.writeBuffer(&chunk)
                case .end: return answer
                }
            }
            throw BenchError("the worker's answer ended early")
        }
    }

    func download(bytes: Int) async throws -> Int {
        let stream = try await open()
        return try await stream.executeThenClose { inbound, outbound in
            try await outbound.write(.head(Self.request(.GET, "/download/\(bytes)")))
            try await outbound.write(.end(nil))
            var received = 0
            for try await part in inbound {
                switch part {
                case .head(let head): try Self.check(head)
                case .body(let chunk): received += chunk.readableBytes
                case .end: return received
                }
            }
            throw BenchError("the worker's answer ended early")
        }
    }

    func stall(bytes: Int) async throws -> StalledCall {
        let stream = try await open()
        let started = Signal()
        let release = Signal()
        let task = Task {
            try? await stream.executeThenClose { inbound, outbound in
                try await outbound.write(.head(Self.request(.GET, "/stall/\(bytes)")))
                try await outbound.write(.end(nil))
                // The head, then nothing more is read: the stream's window stays shut.
                var parts = inbound.makeAsyncIterator()
                _ = try await parts.next()
                started.fire()
                await release.wait()
            }
            started.fire()
        }
        await started.wait()
        return StalledCall(release: release, task: task)
    }

    // MARK: The worker's answers

    /// Answers one stream: `/echo` sends the body back; `/download/N` and `/stall/N` send N bytes
    /// in 64 KiB chunks (`/stall` counts what it wrote in `counter`).
    private static func serve(_ stream: ServedStream, counter: ByteCounter) async {
        try? await stream.executeThenClose { inbound, outbound in
            var uri = ""
            var body = ByteBuffer()
            reading: for try await part in inbound {
                switch part {
                case .head(let head): uri = head.uri
                case .body(var chunk): body.writeBuffer(&chunk)
                case .end: break reading
                }
            }
            let path = uri.split(separator: "/")
            switch (path.first, path.last.flatMap { Int($0) }) {
            case ("echo", _):
                var head = HTTPResponseHead(version: .http1_1, status: .ok)
                head.headers.add(name: "content-length", value: String(body.readableBytes))
                try await outbound.write(.head(head))
                try await outbound.write(.body(.byteBuffer(body)))
                try await outbound.write(.end(nil))
            case ("download", let bytes?), ("stall", let bytes?):
                let counted = path.first == "stall"
                try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .ok)))
                for _ in 0..<(bytes / chunkSize) {
                    try await outbound.write(.body(.byteBuffer(Payload.chunk)))
                    if counted { counter.add(chunkSize) }
                }
                try await outbound.write(.end(nil))
            default:
                try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .notFound)))
                try await outbound.write(.end(nil))
            }
            // Closing now could drop what flow control still holds back: wait for the stream's end.
            try await stream.channel.closeFuture.get()
        }
    }
}
