import CorralCore
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One sandbox's listening socket and the connections on it.
///
/// At most `maxConnectionsPerSandbox` connections are served at once; a connection beyond
/// that is closed as soon as it is accepted, so a sandbox that floods its socket spends only
/// its own share. Each connection has an idle timeout (no bytes either way) enforced in the
/// channel pipeline, and a header timeout per request (see `ProxyConnection`).
final class GatewaySocket: Sendable {
    let path: String
    let binding: SandboxBinding
    private let server: NIOAsyncChannel<any Channel, Never>
    private let registry: ConnectionRegistry
    private let limit: Int
    private let active = Atomic<Int>(0)
    /// Set while connections are being refused, so that a flood is recorded once, not per
    /// connection.
    private let saturated = Atomic<Bool>(false)

    private init(
        path: String, binding: SandboxBinding, server: NIOAsyncChannel<any Channel, Never>,
        registry: ConnectionRegistry,
        limit: Int
    ) {
        self.path = path
        self.binding = binding
        self.server = server
        self.registry = registry
        self.limit = limit
    }

    /// Accepted connections come out of the server channel as plain channels with reads off;
    /// each is wrapped for async use only on the task that serves it. A wrapped channel that
    /// is dropped unserved (on cancellation, say) would trap in NIO, a plain one is simply
    /// closed by the registry.
    static func bind(path: String, binding: SandboxBinding, core: GatewayCore) async throws -> GatewaySocket {
        let idle = TimeAmount(core.configuration.idleTimeout)
        let registry = ConnectionRegistry()
        let bindPath = UnixSocketPath(path)
        defer { withExtendedLifetime(bindPath) {} }
        let server: NIOAsyncChannel<any Channel, Never>
        do {
            server = try await ServerBootstrap(group: core.eventLoopGroup)
                .serverChannelOption(ChannelOptions.backlog, value: 256)
                .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
                .childChannelOption(ChannelOptions.autoRead, value: false)
                .bind(unixDomainSocketPath: bindPath.usable, cleanupExistingSocketFile: true) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: idle))
                        try channel.pipeline.syncOperations.addHandler(CloseOnIdleHandler())
                        registry.add(channel)
                        return channel
                    }
                }
        } catch {
            throw CorralError(
                .io, "cannot listen on the gateway socket \(path)",
                hint: "the sandbox's gateway directory must exist and be writable by corral",
                underlying: error)
        }
        // The sandbox's user is not the host's: anyone who can reach the directory may connect.
        guard chmod(path, 0o666) == 0 else {
            let reason = String(cString: strerror(errno))
            server.channel.close(promise: nil)
            unlink(path)
            throw CorralError(.io, "cannot set the mode of the gateway socket \(path): \(reason)")
        }
        return GatewaySocket(
            path: path, binding: binding, server: server, registry: registry,
            limit: core.configuration.maxConnectionsPerSandbox)
    }

    /// Accepts connections until the socket is closed or the task cancelled.
    func serve(core: GatewayCore) async {
        await withDiscardingTaskGroup { group in
            do {
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        guard admit() else {
                            connection.close(promise: nil)
                            if !saturated.exchange(true, ordering: .relaxed) {
                                group.addTask { [binding, limit] in
                                    await core.record(
                                        GatewayDecision(
                                            action: .connectionLimit, verdict: .denied, target: "",
                                            reason:
                                                "the sandbox holds \(limit) connections already; new ones are closed until some end"
                                        ),
                                        for: binding)
                                }
                            }
                            continue
                        }
                        group.addTask { await self.handle(connection, core: core) }
                    }
                }
            } catch {
                core.logger.debug(
                    "gateway socket stopped accepting",
                    metadata: ["sandbox": "\(binding.sandbox)", "error": "\(error)"])
            }
        }
    }

    private func handle(_ channel: any Channel, core: GatewayCore) async {
        let connection: NIOAsyncChannel<HTTPServerRequestPart, ByteBuffer>
        let maxHeadBytes = core.configuration.maxHeadBytes
        do {
            connection = try await channel.eventLoop.submit {
                // Requests are read by NIOHTTP1's decoder; answers are written as bytes, since
                // a tunnel's or a relayed upstream's bytes go out as they are.
                try channel.pipeline.syncOperations.addHandler(
                    ConnectionReader.makeDecoder(maxHeadBytes: maxHeadBytes), name: ConnectionReader.decoderName)
                let wrapped = try NIOAsyncChannel<HTTPServerRequestPart, ByteBuffer>(
                    wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                // Reads start only now that something consumes them.
                try channel.syncOptions?.setOption(ChannelOptions.autoRead, value: true)
                return wrapped
            }.get()
        } catch {
            release()
            channel.close(promise: nil)
            core.logger.debug(
                "gateway connection not set up", metadata: ["sandbox": "\(binding.sandbox)", "error": "\(error)"])
            return
        }
        do {
            try await connection.executeThenClose { inbound, outbound in
                // Released before the channel closes, so a client that saw the close can
                // connect again at once.
                defer { release() }
                let proxy = ProxyConnection(
                    core: core, binding: binding, channel: channel,
                    reader: ConnectionReader(inbound, channel: channel, maxHeadBytes: maxHeadBytes),
                    outbound: outbound)
                await proxy.run()
            }
        } catch {
            core.logger.debug(
                "gateway connection ended", metadata: ["sandbox": "\(binding.sandbox)", "error": "\(error)"])
        }
    }

    private func admit() -> Bool {
        guard active.add(1, ordering: .relaxed).newValue <= limit else {
            active.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    private func release() {
        if active.subtract(1, ordering: .relaxed).newValue < limit {
            saturated.store(false, ordering: .relaxed)
        }
    }

    /// Stops accepting, closes every connection and removes the socket file.
    func close() {
        guard registry.closeAll() else { return }
        server.channel.close(promise: nil)
        unlink(path)
    }
}

/// Every open connection of one socket, so that closing the socket closes them all.
final class ConnectionRegistry: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var closed = false
    }

    private let state = Mutex(State())

    /// Tracks `channel` until it closes; closes it at once when the socket has closed.
    func add(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        let accepted = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.channels[key] = channel
            return true
        }
        guard accepted else {
            channel.close(promise: nil)
            return
        }
        channel.closeFuture.whenComplete { [self] _ in
            state.withLock { _ = $0.channels.removeValue(forKey: key) }
        }
    }

    /// Closes every tracked channel; false when already closed.
    func closeAll() -> Bool {
        let channels = state.withLock { state -> [any Channel]? in
            guard !state.closed else { return nil }
            state.closed = true
            defer { state.channels.removeAll() }
            return Array(state.channels.values)
        }
        guard let channels else { return false }
        for channel in channels { channel.close(promise: nil) }
        return true
    }
}

/// Closes a connection that has had no traffic either way for the idle timeout.
final class CloseOnIdleHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}
