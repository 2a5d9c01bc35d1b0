import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOCore
import NIOPosix

/// The worker's three calls as gRPC methods on raw bytes: no protobuf, no generated code.
enum LinkMethods {
    static let service = ServiceDescriptor(package: "corral.bench", service: "WorkerLink")
    /// Unary: the request's bytes come back.
    static let echo = MethodDescriptor(service: service, method: "Echo")
    /// Server streaming: the request is a byte count, in decimal; the answer is that many bytes in
    /// 64 KiB messages.
    static let download = MethodDescriptor(service: service, method: "Download")
    /// As `download`, and the worker counts what it wrote.
    static let stall = MethodDescriptor(service: service, method: "Stall")
}

/// A message is its bytes: serializing copies them once into the transport's buffer.
struct RawSerializer: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: ByteBuffer) throws -> Bytes {
        Bytes(message.readableBytesView)
    }
}

/// A message is its bytes: deserializing copies them once out of the transport's buffer.
struct RawDeserializer: MessageDeserializer {
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> ByteBuffer {
        serializedMessageBytes.withUnsafeBytes { ByteBuffer(bytes: $0) }
    }
}

/// The worker's side: the three methods, registered by hand as generated code would.
struct WorkerLinkService: RegistrableRPCService {
    let counter: ByteCounter

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        router.registerHandler(
            forMethod: LinkMethods.echo, deserializer: RawDeserializer(), serializer: RawSerializer()
        ) { request, _ in
            let single = try await ServerRequest(stream: request)
            return StreamingServerResponse(single: ServerResponse(message: single.message))
        }
        let counter = self.counter
        for (method, counted) in [(LinkMethods.download, false), (LinkMethods.stall, true)] {
            router.registerHandler(
                forMethod: method, deserializer: RawDeserializer(), serializer: RawSerializer()
            ) { request, _ in
                let single = try await ServerRequest(stream: request)
                guard let bytes = Int(String(buffer: single.message)) else {
                    throw RPCError(code: .invalidArgument, message: "the request is no byte count")
                }
                return StreamingServerResponse { writer in
                    for _ in 0..<(bytes / chunkSize) {
                        try await writer.write(Payload.chunk)
                        if counted { counter.add(chunkSize) }
                    }
                    return [:]
                }
            }
        }
    }
}

/// gRPC over one HTTP/2 connection: a `GRPCClient` on `Transport` calling a `GRPCServer` that
/// serves ``WorkerLinkService``.
final class GRPCLink<Transport: ClientTransport>: LinkClient {
    let name: String
    private let client: GRPCClient<Transport>
    private let counter: ByteCounter
    private let received: ByteCounter
    private let stop: @Sendable () async -> Void

    /// - Parameters:
    ///   - counter: What the worker's stalled calls wrote.
    ///   - received: What the control plane's socket received.
    ///   - stop: Ends the client's and the server's tasks.
    init(
        name: String, client: GRPCClient<Transport>, counter: ByteCounter, received: ByteCounter,
        stop: @escaping @Sendable () async -> Void
    ) {
        self.name = name
        self.client = client
        self.counter = counter
        self.received = received
        self.stop = stop
    }

    var stalledBytesWritten: Int { counter.value }

    var receivedBytes: Int { received.value }

    func shutdown() async { await stop() }

    func echo(_ body: ByteBuffer) async throws -> ByteBuffer {
        try await client.unary(
            request: ClientRequest(message: body), descriptor: LinkMethods.echo,
            serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
        ) { response in
            try response.message
        }
    }

    func download(bytes: Int) async throws -> Int {
        try await client.serverStreaming(
            request: ClientRequest(message: ByteBuffer(string: String(bytes))), descriptor: LinkMethods.download,
            serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
        ) { response in
            var received = 0
            for try await message in response.messages { received += message.readableBytes }
            return received
        }
    }

    func stall(bytes: Int) async throws -> StalledCall {
        let started = Signal()
        let release = Signal()
        let client = self.client
        let task = Task {
            // The handler has the answer's metadata and reads none of its messages; returning
            // from it cancels the call.
            _ = try? await client.serverStreaming(
                request: ClientRequest(message: ByteBuffer(string: String(bytes))), descriptor: LinkMethods.stall,
                serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
            ) { _ in
                started.fire()
                await release.wait()
                return 0
            }
            started.fire()
        }
        await started.wait()
        return StalledCall(release: release, task: task)
    }
}

/// The HTTP/2 settings both gRPC ends get: 1 MiB frames and a 1 MiB window (the transport has one
/// window size for the connection and its streams, where corral has 16 MiB and 1 MiB).
enum GRPCSettings {
    static let maxFrameSize = 1 << 20
    static let targetWindowSize = 1 << 20

    static var server: HTTP2ServerTransport.Config.HTTP2 {
        .init(maxFrameSize: maxFrameSize, targetWindowSize: targetWindowSize, maxConcurrentStreams: 4096)
    }

    static var client: HTTP2ClientTransport.Config.HTTP2 {
        .init(maxFrameSize: maxFrameSize, targetWindowSize: targetWindowSize, authority: nil)
    }
}

extension GRPCLink where Transport == HTTP2ClientTransport.Posix {
    /// gRPC in its own orientation: the worker listens on 127.0.0.1 (on `worker`) and the control
    /// plane dials it (on `controlPlane`), with the posix HTTP/2 transports and no TLS.
    ///
    /// - Parameters:
    ///   - coalescing: Keeps the transports' flush coalescing (on by default: each flush waits up to
    ///     100 µs for more bytes); `false` turns it off on both ends.
    static func standard(
        name: String, coalescing: Bool, controlPlane: MultiThreadedEventLoopGroup, worker: MultiThreadedEventLoopGroup
    ) async throws -> GRPCLink {
        let counter = ByteCounter()
        let serverTransport = HTTP2ServerTransport.Posix(
            address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext,
            config: .defaults { config in
                config.http2 = GRPCSettings.server
                if !coalescing { config.connection.flushCoalescing = nil }
            },
            eventLoopGroup: worker)
        let server = GRPCServer(transport: serverTransport, services: [WorkerLinkService(counter: counter)])
        let serving = Task { try? await server.serve() }
        guard let port = try await serverTransport.listeningAddress.ipv4?.port else {
            throw BenchError("the gRPC server has no IPv4 port")
        }
        let received = ByteCounter()
        let clientTransport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext,
            config: .defaults { config in
                config.http2 = GRPCSettings.client
                if !coalescing { config.connection.flushCoalescing = nil }
                config.channelDebuggingCallbacks.onCreateTCPConnection = { channel in
                    channel.pipeline.addHandler(ReceivedBytes(received), position: .first)
                }
            },
            eventLoopGroup: controlPlane)
        let client = GRPCClient(transport: clientTransport)
        let connections = Task { try? await client.runConnections() }
        return GRPCLink(name: name, client: client, counter: counter, received: received) {
            client.beginGracefulShutdown()
            await connections.value
            server.beginGracefulShutdown()
            await serving.value
        }
    }
}
