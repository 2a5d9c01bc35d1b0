import CorralCore
import CorralPolicy
import NIOCore
import NIOPosix

/// Egress: CONNECT tunnels and plain HTTP requests to allow-listed hosts. No TLS is
/// terminated here: a CONNECT tunnel carries the sandbox's own TLS end to end, decided by
/// the host name it asked for.
extension ProxyConnection {
    /// `CONNECT host:port`: allowed hosts get a byte tunnel; the connection ends with it.
    func tunnel(_ head: ProxyRequestHead) async throws {
        guard let (host, port) = AbsoluteTarget.splitAuthority(head.target, defaultPort: 443) else {
            await record(.badRequest, .denied, target: "", reason: "a CONNECT target that is not host:port")
            throw HTTPFailure(400, "corral gateway: CONNECT needs host:port")
        }
        let target = "\(host):\(port)"
        guard try await hostHeaderMatches(head, host: host, port: port, defaultPort: port) else { return }
        guard try await allowEgress(host: host, port: port, target: target, head: head) else { return }
        try await withUpstream(host: host, port: port, target: target) { upstreamInbound, upstreamOutbound in
            // HTTP ends here: the decoder leaves, and what the client sends next is the tunnel's.
            try await reader.startTunnel()
            try await write("HTTP/1.1 200 Connection Established\r\n\r\n")
            try await relay(upstreamInbound: upstreamInbound, upstreamOutbound: upstreamOutbound, halfClose: true) {
                reader, send in
                while let bytes = try await reader.nextRaw() { try await send(bytes) }
            }
        }
    }

    /// An absolute-form `http://` request to another host: sent on in origin form with
    /// `Connection: close`, the answer relayed as it comes; the connection ends with it.
    func forward(_ head: ProxyRequestHead, _ target: AbsoluteTarget) async throws {
        let name = "\(target.host):\(target.port)"
        guard try await allowEgress(host: target.host, port: target.port, target: name, head: head) else { return }
        var text = "\(head.method) \(target.pathAndQuery) HTTP/1.1\r\n"
        let hopByHop: Set<String> = [
            "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te",
            "trailer",
            "transfer-encoding", "upgrade", "content-length",
        ]
        // The Host sent on is always the target's own (RFC 9112 §3.2.2): the one the client
        // sent was checked against the target in `route`, and is not passed through.
        text += "Host: \(target.authority)\r\n"
        for field in head.headers where !hopByHop.contains(field.name.lowercased()) && field.name.lowercased() != "host"
        {
            text += "\(field.name): \(field.value)\r\n"
        }
        switch head.framing {
        case .none: break
        case .length(let length): text += "Content-Length: \(length)\r\n"
        case .chunked: text += "Transfer-Encoding: chunked\r\n"
        }
        text += "Connection: close\r\n\r\n"
        let requestHead = channel.allocator.buffer(string: text)
        let framing = head.framing
        let allocator = channel.allocator
        try await withUpstream(host: target.host, port: target.port, target: name) {
            upstreamInbound, upstreamOutbound in
            // No half-close after the request: some servers take it for an abort. The
            // upstream closes after its answer (Connection: close), which ends the relay.
            try await relay(upstreamInbound: upstreamInbound, upstreamOutbound: upstreamOutbound, halfClose: false) {
                reader, send in
                try await send(requestHead)
                try await reader.readBody(framing, limit: .max) { slice in
                    if framing == .chunked {
                        var framed = allocator.buffer(capacity: slice.readableBytes + 16)
                        framed.writeString(String(slice.readableBytes, radix: 16) + "\r\n")
                        framed.writeImmutableBuffer(slice)
                        framed.writeString("\r\n")
                        try await send(framed)
                    } else {
                        try await send(slice)
                    }
                }
                if framing == .chunked { try await send(allocator.buffer(string: "0\r\n\r\n")) }
            }
        }
    }

    /// Checks the allow-list; records and answers 403 when denied. The allowed decision is
    /// recorded once the address is checked too (`withUpstream`).
    private func allowEgress(host: String, port: Int, target: String, head: ProxyRequestHead) async throws -> Bool {
        let policy = binding.policy
        if host == GitRepository.gatewayHost {
            await record(.egress, .denied, target: target, reason: "git.corral is served over plain http only")
            await refuse(
                head, 403, "corral gateway: use http://git.corral/HOST/OWNER/REPO.git; git.corral takes no CONNECT")
            return false
        }
        guard policy.allowsEgress(host: host, port: port) else {
            await record(.egress, .denied, target: target, reason: "the host is not on the sandbox's egress allow-list")
            await refuse(
                head, 403,
                "corral gateway: egress to \(target) is denied: the host is not on this sandbox's allow-list (ask for it with --allow-host)"
            )
            return false
        }
        return true
    }

    /// Connects to the upstream host, runs `body` with its channel, then closes it. A failure
    /// to connect answers 502.
    private func withUpstream(
        host: String, port: Int, target: String,
        _ body: (NIOAsyncChannelInboundStream<ByteBuffer>, NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws ->
            Void
    ) async throws {
        let dial: DialTarget
        do {
            dial = try await core.configuration.dialPolicy.resolve(host: host, port: port, tenant: binding.tenant)
        } catch let error as CorralError where error.code == .permissionDenied {
            await record(.egress, .denied, target: target, reason: error.message)
            throw HTTPFailure(403, "corral gateway: egress to \(target) is denied: \(error.message)")
        } catch {
            await record(.egress, .denied, target: target, reason: "the host name does not resolve")
            throw HTTPFailure(502, "corral gateway: cannot resolve \(host)")
        }
        let address = dial.socketAddress
        await record(.egress, .allowed, target: target, reason: "the host is on the egress allow-list")
        let upstream: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            upstream = try await ClientBootstrap(group: core.eventLoopGroup)
                .connectTimeout(TimeAmount(core.configuration.upstreamConnectTimeout))
                .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
                .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
                .connect(to: address) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true))
                    }
                }
        } catch {
            await record(.egress, .denied, target: target, reason: "the host cannot be reached: \(error)")
            throw HTTPFailure(502, "corral gateway: cannot connect to \(target): \(error)")
        }
        try await upstream.executeThenClose { inbound, outbound in
            try await body(inbound, outbound)
        }
    }

    /// Copies the upstream's bytes to the sandbox on a child task while `send` (on this task,
    /// which owns the reader) feeds the upstream. The sandbox's side is half-closed when the
    /// upstream ends, and the upstream's (with `halfClose`) when `send` returns, so both
    /// directions drain; the relay ends when both have.
    private func relay(
        upstreamInbound: NIOAsyncChannelInboundStream<ByteBuffer>,
        upstreamOutbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, halfClose: Bool,
        _ send: (inout ConnectionReader, (ByteBuffer) async throws -> Void) async throws -> Void
    ) async throws {
        responseStarted = true
        let clientOutbound = outbound
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for try await bytes in upstreamInbound { try await clientOutbound.write(bytes) }
                clientOutbound.finish()
            }
            do {
                try await send(&reader) { bytes in try await upstreamOutbound.write(bytes) }
                if halfClose { upstreamOutbound.finish() }
            } catch {
                group.cancelAll()
                throw error
            }
            try await group.waitForAll()
        }
    }
}
