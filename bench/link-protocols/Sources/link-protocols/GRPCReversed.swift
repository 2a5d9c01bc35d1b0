import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOCore
import NIOHTTP2
import NIOPosix

extension GRPCLink where Transport == HTTP2ClientTransport.WrappedChannel {
    /// gRPC with corral's orientation: the control plane listens on 127.0.0.1 (on `controlPlane`)
    /// and is the gRPC client on the connection it accepts; the worker dials (on `worker`) and is
    /// the gRPC server on it.
    ///
    /// Both halves use grpc-swift-nio-transport's public API: the caller's end is
    /// `HTTP2ClientTransport.WrappedChannel` (2.9), which configures gRPC's client pipeline on a
    /// channel the caller supplies, here an accepted one. The worker's end is
    /// `HTTP2ServerTransport.Custom` (2.6) with a ``DialingListener``: that transport expects a
    /// listening channel whose reads are connections, so the listener here is the dialled
    /// connection itself, handing itself over once (see ``HandOver``).
    static func reversed(
        name: String, controlPlane: MultiThreadedEventLoopGroup, worker: MultiThreadedEventLoopGroup
    ) async throws -> GRPCLink {
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        let received = ByteCounter()
        async let accepted = HTTP2ClientTransport.WrappedChannel.wrapping(
            config: .defaults { $0.http2 = GRPCSettings.client }
        ) { configure in
            defer { portContinuation.finish() }
            let listener = try await ServerBootstrap(group: controlPlane)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: "127.0.0.1", port: 0) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ReceivedBytes(received))
                    }.flatMap { configure(channel) }
                }
            portContinuation.yield(listener.channel.localAddress?.port ?? 0)
            return try await listener.executeThenClose { inbound in
                var connections = inbound.makeAsyncIterator()
                guard let first = try await connections.next() else {
                    throw BenchError("the listener closed before the worker dialled")
                }
                return first
            }
        }
        var portIterator = ports.makeAsyncIterator()
        guard let port = await portIterator.next(), port != 0 else {
            _ = try await accepted
            throw BenchError("the control plane's listener has no port")
        }
        let counter = ByteCounter()
        let serverTransport = HTTP2ServerTransport.Custom(
            listenerFactory: DialingListener(eventLoopGroup: worker, port: port),
            config: .init(
                compression: .defaults, connection: .defaults, http2: GRPCSettings.server, rpc: .defaults,
                channelDebuggingCallbacks: .defaults))
        let server = GRPCServer(transport: serverTransport, services: [WorkerLinkService(counter: counter)])
        let serving = Task { try? await server.serve() }
        let client = GRPCClient(transport: try await accepted)
        let connections = Task { try? await client.runConnections() }
        return GRPCLink(name: name, client: client, counter: counter, received: received) {
            // The client's shutdown closes the connection, and the worker's "listener" with it.
            client.beginGracefulShutdown()
            await connections.value
            server.beginGracefulShutdown()
            await serving.value
        }
    }
}

/// The worker's side of a reversed gRPC link: a ListenerFactory that dials instead of listening.
///
/// `HTTP2ServerTransport.Custom` asks for a `NIOAsyncChannel` whose inbound elements are
/// configured connections. This one dials the control plane, has gRPC configure the connection
/// as a server, and wraps that same channel as the "listener", which yields the connection once
/// and ends when the connection closes. The transport's quiescing handler, which expects to
/// collect accepted child channels, is left out, so graceful shutdown is the caller's: its
/// GOAWAY and close end the link.
struct DialingListener: HTTP2ServerTransport.ListenerFactory {
    typealias Connection = HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel

    let eventLoopGroup: any EventLoopGroup
    let port: Int

    func makeListeningChannel(
        listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
        connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
    ) async throws -> NIOAsyncChannel<Connection, Never> {
        try await ClientBootstrap(group: eventLoopGroup).connect(host: "127.0.0.1", port: port) { channel in
            connectionConfigurator.configure(channel: channel, tls: .none).flatMapThrowing { connection in
                try channel.pipeline.syncOperations.addHandler(HandOver(connection))
                return try NIOAsyncChannel<Connection, Never>(wrappingChannelSynchronously: channel)
            }
        }
    }
}

/// Sits after gRPC's handlers on the worker's dialled channel, before the "listener": drops the
/// connection-level HTTP/2 frames that gRPC's own async channel passes on, and reads the
/// configured connection into the listener once the channel is active.
final class HandOver: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = DialingListener.Connection

    private var connection: DialingListener.Connection?

    init(_ connection: DialingListener.Connection) {
        self.connection = connection
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        guard let connection else { return }
        self.connection = nil
        context.fireChannelRead(wrapInboundOut(connection))
        context.fireChannelReadComplete()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // gRPC's connection channel has had these frames already.
    }
}
