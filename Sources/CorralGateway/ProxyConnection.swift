import CorralCore
import CorralPolicy
import Foundation
import Logging
import NIOCore

/// One connection from a sandbox: reads requests one after another and routes each to the
/// git proxy or the egress rules.
///
/// Lives on the connection's task alone (its reader may not cross tasks). Errors that reach
/// the sandbox are HTTP answers with a one-line `text/plain` reason, which git prints as
/// `remote: …`; a connection the gateway cannot make sense of gets a 400 and is closed.
final class ProxyConnection {
    let core: GatewayCore
    let binding: SandboxBinding
    let channel: any Channel
    var reader: ConnectionReader
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    /// True once any byte of a response went out: after that, errors can only close.
    var responseStarted = false

    init(
        core: GatewayCore, binding: SandboxBinding, channel: any Channel, reader: ConnectionReader,
        outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    ) {
        self.core = core
        self.binding = binding
        self.channel = channel
        self.reader = reader
        self.outbound = outbound
    }

    var logger: Logger { core.logger }

    func run() async {
        while !Task.isCancelled {
            responseStarted = false
            let channel = self.channel
            let timer = channel.eventLoop.scheduleTask(in: TimeAmount(core.configuration.headerTimeout)) {
                channel.close(promise: nil)
            }
            let head: ProxyRequestHead?
            do {
                head = try await reader.readHead()
                timer.cancel()
            } catch let failure as HTTPFailure {
                timer.cancel()
                await record(.badRequest, .denied, target: "", reason: failure.message)
                await respond(failure.status, "corral gateway: bad request: \(failure.message)", close: true)
                return
            } catch {
                timer.cancel()
                return
            }
            guard let head else { return }
            do {
                guard try await route(head) else { return }
            } catch let failure as HTTPFailure {
                if !responseStarted {
                    let prefix = "corral gateway: "
                    let message = failure.message.hasPrefix(prefix) ? failure.message : prefix + failure.message
                    await respond(failure.status, message, close: true)
                }
                return
            } catch {
                logger.debug(
                    "gateway request failed", metadata: ["sandbox": "\(binding.sandbox)", "error": "\(error)"])
                if !responseStarted {
                    await respond(502, "corral gateway: the request failed inside the gateway", close: true)
                }
                return
            }
        }
    }

    /// Handles one request; true when the connection may carry another.
    private func route(_ head: ProxyRequestHead) async throws -> Bool {
        if head.method == "CONNECT" {
            try await tunnel(head)
            return false
        }
        guard let target = AbsoluteTarget(parsing: head.target) else {
            await record(.badRequest, .denied, target: "", reason: "a request that is not in absolute form")
            throw HTTPFailure(
                400,
                "corral gateway: this is a proxy: send requests in absolute form (http://host/path) or CONNECT host:port"
            )
        }
        if target.scheme == "https" {
            await record(.badRequest, .denied, target: target.authority, reason: "an https:// request without CONNECT")
            throw HTTPFailure(400, "corral gateway: send https requests through CONNECT (with TLS end to end)")
        }
        guard try await hostHeaderMatches(head, host: target.host, port: target.port, defaultPort: 80) else {
            return false
        }
        if target.host == GitRepository.gatewayHost {
            return try await handleGit(head, target)
        }
        try await forward(head, target)
        return false
    }

    /// A `Host` header, when sent, must name the request's own target (a low finding of the
    /// security review): a request checked against one host must not reach another through a
    /// virtual host, a rebinding trick or a cache keyed on Host. A mismatch is refused with a
    /// 400 rather than rewritten, so that the attempt shows up as a decision; what is sent on
    /// always carries the target's Host. Without a port, a Host means `defaultPort`.
    func hostHeaderMatches(_ head: ProxyRequestHead, host: String, port: Int, defaultPort: Int) async throws -> Bool {
        let values = head.headers.fields.filter { $0.name.lowercased() == "host" }.map(\.value)
        guard !values.isEmpty else { return true }
        let target = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        let named = values.count == 1 ? AbsoluteTarget.splitAuthority(values[0], defaultPort: defaultPort) : nil
        if let named, named.host == host, named.port == port { return true }
        let shown = values.joined(separator: ", ").prefix(200)
        await record(
            .badRequest, .denied, target: target, reason: "the Host header (\(shown)) is not the request's target")
        await refuse(
            head, 400,
            "corral gateway: the Host header (\(shown)) differs from the request's target \(target); send the target's own host"
        )
        return false
    }

    // MARK: Decisions

    func record(
        _ action: GatewayDecision.Action, _ verdict: GatewayDecision.Verdict, target: String, reason: String,
        credential: String? = nil
    ) async {
        await core.record(
            GatewayDecision(action: action, verdict: verdict, target: target, reason: reason, credential: credential),
            for: binding)
    }

    // MARK: Writing

    func write(_ buffer: ByteBuffer) async throws {
        responseStarted = true
        try await outbound.write(buffer)
    }

    func write(_ text: String) async throws {
        try await write(channel.allocator.buffer(string: text))
    }

    /// Writes a status line and headers (each `Name: value`).
    func writeHead(status: Int, headers: [(String, String)]) async throws {
        var text = "HTTP/1.1 \(status) \(reasonPhrase(status))\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        text += "\r\n"
        try await write(text)
    }

    /// A complete answer with a `text/plain` reason, which git shows as `remote: …`. Write
    /// errors are ignored: the peer may have gone.
    func respond(_ status: Int, _ message: String, close: Bool, extraHeaders: [(String, String)] = []) async {
        let body = message.hasSuffix("\n") ? message : message + "\n"
        var headers: [(String, String)] = [
            ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "\(body.utf8.count)"),
            ("Cache-Control", "no-cache"),
        ]
        headers += extraHeaders
        if close { headers.append(("Connection", "close")) }
        var text = "HTTP/1.1 \(status) \(reasonPhrase(status))\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        text += "\r\n" + body
        try? await write(text)
    }

    /// Answers a refusal: reads and drops a small body first so that the client sees the
    /// answer rather than a reset, then closes.
    func refuse(_ head: ProxyRequestHead, _ status: Int, _ message: String) async {
        if head.method != "CONNECT" && !head.expectsContinue {
            _ = await reader.discardBody(head.framing, limit: 1 << 20)
        }
        await respond(status, message, close: true)
    }
}

/// `scheme://authority/path?query` from an absolute-form request target.
struct AbsoluteTarget: Sendable {
    var scheme: String
    /// As written, for messages: `host[:port]`.
    var authority: String
    /// Lower-cased; IPv6 without brackets.
    var host: String
    var port: Int
    /// Origin form: `/path?query`.
    var pathAndQuery: String

    init?(parsing text: String) {
        guard let schemeEnd = text.range(of: "://") else { return nil }
        let scheme = text[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "http" || scheme == "https" else { return nil }
        let rest = text[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = String(rest[..<authorityEnd])
        var path = String(rest[authorityEnd...])
        if path.isEmpty || path.hasPrefix("?") { path = "/" + path }
        guard let (host, port) = Self.splitAuthority(authority, defaultPort: scheme == "https" ? 443 : 80) else {
            return nil
        }
        self.scheme = scheme
        self.authority = authority
        self.host = host
        self.port = port
        self.pathAndQuery = path
    }

    /// `host[:port]` or `[v6][:port]`; nil when malformed or when it carries user info.
    static func splitAuthority(_ authority: String, defaultPort: Int) -> (host: String, port: Int)? {
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                portText = after.dropFirst()
            } else if !after.isEmpty {
                return nil
            }
            guard !host.isEmpty, host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return nil }
        } else {
            if let colon = authority.lastIndex(of: ":") {
                host = authority[..<colon]
                portText = authority[authority.index(after: colon)...]
            } else {
                host = Substring(authority)
            }
            let valid = host.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "."
                    || $0 == "-" || $0 == "_"
            }
            guard !host.isEmpty, valid else { return nil }
        }
        var port = defaultPort
        if let portText {
            guard let parsed = Int(portText), (1...65535).contains(parsed) else { return nil }
            port = parsed
        }
        return (host.lowercased(), port)
    }
}
