import CorralCore
import Foundation
import Logging
import NIOCore
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
    private let server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
    private let limit: Int
    private let active = Atomic<Int>(0)
    /// Set while connections are being refused, so that a flood is recorded once, not per
    /// connection.
    private let saturated = Atomic<Bool>(false)
    private let closed = Atomic<Bool>(false)
    private let connections = Mutex<[ObjectIdentifier: any Channel]>([:])

    private init(
        path: String, binding: SandboxBinding, server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>,
        limit: Int
    ) {
        self.path = path
        self.binding = binding
        self.server = server
        self.limit = limit
    }

    static func bind(path: String, binding: SandboxBinding, core: GatewayCore) async throws -> GatewaySocket {
        let idle = TimeAmount(core.configuration.idleTimeout)
        let server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
        do {
            server = try await ServerBootstrap(group: core.eventLoopGroup)
                .serverChannelOption(ChannelOptions.backlog, value: 256)
                .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: idle))
                        try channel.pipeline.syncOperations.addHandler(CloseOnIdleHandler())
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true))
                    }
                }
        } catch {
            throw CorralError(
                .io, "cannot listen on the gateway socket \(path)",
                hint: "the sandbox's gateway directory must exist, and the path must be shorter than 108 bytes",
                underlying: error)
        }
        // The sandbox's user is not the host's: anyone who can reach the directory may connect.
        guard chmod(path, 0o666) == 0 else {
            let reason = String(cString: strerror(errno))
            server.channel.close(promise: nil)
            unlink(path)
            throw CorralError(.io, "cannot set the mode of the gateway socket \(path): \(reason)")
        }
        return GatewaySocket(path: path, binding: binding, server: server, limit: core.configuration.maxConnectionsPerSandbox)
    }

    /// Accepts connections until the socket is closed or the task cancelled.
    func serve(core: GatewayCore) async {
        await withDiscardingTaskGroup { group in
            do {
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        guard admit(connection.channel) else {
                            connection.channel.close(promise: nil)
                            if !saturated.exchange(true, ordering: .relaxed) {
                                group.addTask { [binding, limit] in
                                    await core.record(
                                        GatewayDecision(
                                            action: .connectionLimit, verdict: .denied, target: "",
                                            reason: "the sandbox holds \(limit) connections already; new ones are closed until some end"),
                                        for: binding)
                                }
                            }
                            continue
                        }
                        group.addTask { await self.handle(connection, core: core) }
                    }
                }
            } catch {
                core.logger.debug("gateway socket stopped accepting", metadata: ["sandbox": "\(binding.sandbox)", "error": "\(error)"])
            }
        }
    }

    private func handle(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, core: GatewayCore) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                // Released before the channel closes, so a client that saw the close can
                // connect again at once.
                defer { release(connection.channel) }
                let proxy = ProxyConnection(
                    core: core, binding: binding, channel: connection.channel,
                    reader: ConnectionReader(
                        inbound, allocator: connection.channel.allocator, maxHeadBytes: core.configuration.maxHeadBytes),
                    outbound: outbound)
                await proxy.run()
            }
        } catch {
            core.logger.debug("gateway connection ended", metadata: ["sandbox": "\(binding.sandbox)", "error": "\(error)"])
        }
    }

    private func admit(_ channel: any Channel) -> Bool {
        guard active.add(1, ordering: .relaxed).newValue <= limit else {
            active.subtract(1, ordering: .relaxed)
            return false
        }
        let admitted = connections.withLock { connections -> Bool in
            guard !closed.load(ordering: .relaxed) else { return false }
            connections[ObjectIdentifier(channel)] = channel
            return true
        }
        if !admitted { active.subtract(1, ordering: .relaxed) }
        return admitted
    }

    private func release(_ channel: any Channel) {
        connections.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(channel)) }
        if active.subtract(1, ordering: .relaxed).newValue < limit {
            saturated.store(false, ordering: .relaxed)
        }
    }

    /// Stops accepting, closes every connection and removes the socket file.
    func close() {
        let live = connections.withLock { connections -> [any Channel]? in
            guard !closed.exchange(true, ordering: .relaxed) else { return nil }
            defer { connections.removeAll() }
            return Array(connections.values)
        }
        guard let live else { return }
        server.channel.close(promise: nil)
        for channel in live { channel.close(promise: nil) }
        unlink(path)
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
