import CorralCore
import CorralPolicy
import CurlHTTP
import Foundation
import NIOCore

/// The git smart-HTTP proxy: grant checks, the vault's credential added on the way out, and
/// the upstream's answer streamed back.
extension ProxyConnection {
    /// Request headers git sends that the upstream needs. Everything else stays behind, the
    /// sandbox's own Authorization above all.
    static let forwardedRequestHeaders = [
        "Content-Type", "Accept", "Accept-Encoding", "Accept-Language", "Content-Encoding", "Git-Protocol",
        "User-Agent",
    ]
    /// Response headers passed back to git.
    static let forwardedResponseHeaders = [
        "Content-Type", "Cache-Control", "Expires", "Pragma", "Content-Encoding", "Last-Modified", "ETag",
    ]

    /// Handles one request to git.corral; true when the connection may carry another.
    func handleGit(_ head: ProxyRequestHead, _ target: AbsoluteTarget) async throws -> Bool {
        let request: GitRequest
        do {
            request = try GitRequest(method: head.method, pathAndQuery: target.pathAndQuery)
        } catch let failure as HTTPFailure {
            await record(.badRequest, .denied, target: "git.corral", reason: "not a smart-HTTP git request")
            await refuse(head, failure.status, failure.message)
            return false
        }
        let repository = request.repository
        let action: GatewayDecision.Action = request.service == .receivePack ? .gitPush : .gitFetch
        // The grant is looked up on every request, not once per operation: a policy change
        // applies to the next request.
        guard let grant = binding.policy.grant(for: repository) else {
            await record(
                action, .denied, target: "\(repository)", reason: "the sandbox has no grant for this repository")
            await refuse(head, 403, "corral gateway: this sandbox has no grant for \(repository)")
            return false
        }
        if request.service == .receivePack && grant.access != .write {
            await record(action, .denied, target: "\(repository)", reason: "the grant is read-only")
            await refuse(
                head, 403, "corral gateway: \(repository) is granted read-only to this sandbox; pushes are refused")
            return false
        }
        // The upstream's address is resolved and checked once per request, and the request is
        // pinned to it: a network tenant never gets the host's own services, whatever the
        // repository's host says or its name resolves to.
        let upstream: DialTarget
        let (upstreamHost, upstreamPort) = repository.upstreamHostAndPort
        do {
            upstream = try await core.configuration.dialPolicy.resolve(
                host: upstreamHost, port: upstreamPort, tenant: binding.tenant)
        } catch let error as CorralError {
            let reason =
                error.code == .permissionDenied
                ? "the upstream is refused: \(error.message)" : "cannot reach \(repository.host): \(error.message)"
            await record(action, .denied, target: "\(repository)", reason: reason)
            await refuse(
                head, error.code == .permissionDenied ? 403 : 502,
                error.code == .permissionDenied
                    ? "corral gateway: \(repository.host) is refused: \(error.message)" : "corral gateway: \(reason)")
            return false
        }
        let credential: ResolvedCredential?
        do {
            credential = try await core.vault.resolve(for: repository, tenant: binding.tenant)
        } catch {
            logger.error("gateway cannot read the vault", metadata: ["error": "\(error)"])
            await record(action, .denied, target: "\(repository)", reason: "the vault cannot be read")
            await refuse(
                head, 503,
                "corral gateway: the gateway cannot read its vault; ask the operator to check the host's logs")
            return false
        }

        switch (request.kind, request.service) {
        case (.advertisement, _):
            await record(
                action, .allowed, target: "\(repository)",
                reason: request.service == .receivePack
                    ? "write grant: push may start" : "\(grant.access.rawValue) grant: fetch",
                credential: credential?.entry.name)
            return try await forwardGit(head, request, body: .empty, credential: credential, upstream: upstream)
        case (.rpc, .uploadPack):
            if head.expectsContinue { try await write("HTTP/1.1 100 Continue\r\n\r\n") }
            var body: [UInt8] = []
            try await reader.readBody(head.framing, limit: core.configuration.maxFetchRequestBytes) { slice in
                body.append(contentsOf: slice.readableBytesView)
            }
            return try await forwardGit(
                head, request, body: .bytes(body), credential: credential, upstream: upstream)
        case (.rpc, .receivePack):
            return try await handleReceivePack(
                head, request, grant: grant, credential: credential, upstream: upstream)
        }
    }

    /// Sends the request upstream with the credential and streams the answer back. Upstream
    /// refusals become a reason git prints; the upstream's own text is never passed on for
    /// errors, so nothing it echoes can leak.
    func forwardGit(
        _ head: ProxyRequestHead, _ request: GitRequest, body: HTTPRequestBody, credential: ResolvedCredential?,
        upstream: DialTarget
    ) async throws -> Bool {
        let repository = request.repository
        let action: GatewayDecision.Action = request.service == .receivePack ? .gitPush : .gitFetch
        var headers = HTTPHeaders()
        for name in Self.forwardedRequestHeaders {
            for field in head.headers where field.name.lowercased() == name.lowercased() {
                headers.add(name, field.value)
            }
        }
        if let credential { headers.add("Authorization", credential.authorizationHeader) }
        var upstreamRequest = HTTPRequest(
            HTTPMethod(rawValue: head.method), request.upstreamPath, headers: headers, body: body)
        upstreamRequest.connectTo = (upstream.urlAddress, upstream.port)
        let keepAlive = head.keepAlive
        do {
            let client = try core.upstreams.client(for: repository)
            return try await client.withStreamingResponse(upstreamRequest) { upstreamHead, upstreamBody in
                let status = upstreamHead.status
                logger.debug(
                    "gateway git request",
                    metadata: [
                        "sandbox": "\(binding.sandbox)", "method": "\(head.method)", "repository": "\(repository)",
                        "service": "\(request.service.rawValue)", "status": "\(status)",
                    ])
                guard (200..<300).contains(status) else {
                    let (reply, reason) = Self.explainUpstreamRefusal(
                        status: status, repository: repository, credential: credential)
                    await record(
                        action, .denied, target: "\(repository)", reason: reason, credential: credential?.entry.name)
                    await respond(reply.status, reply.message, close: true)
                    return false
                }
                var responseHeaders: [(String, String)] = []
                for name in Self.forwardedResponseHeaders {
                    if let value = upstreamHead.headers[name] { responseHeaders.append((name, value)) }
                }
                let length =
                    upstreamHead.headers["Transfer-Encoding"] == nil
                    ? upstreamHead.headers["Content-Length"].flatMap { Int64($0) } : nil
                if let length {
                    responseHeaders.append(("Content-Length", "\(length)"))
                } else {
                    responseHeaders.append(("Transfer-Encoding", "chunked"))
                }
                if !keepAlive { responseHeaders.append(("Connection", "close")) }
                try await writeHead(status: status, headers: responseHeaders)
                let allocator = channel.allocator
                for try await chunk in upstreamBody where !chunk.isEmpty {
                    if length == nil {
                        var framed = allocator.buffer(capacity: chunk.count + 16)
                        framed.writeString(String(chunk.count, radix: 16) + "\r\n")
                        framed.writeBytes(chunk)
                        framed.writeString("\r\n")
                        try await write(framed)
                    } else {
                        try await write(allocator.buffer(bytes: chunk))
                    }
                }
                if length == nil { try await write("0\r\n\r\n") }
                return keepAlive
            }
        } catch let error as CorralError where !responseStarted {
            let reason = "cannot reach \(repository.host): \(error.message)"
            await record(action, .denied, target: "\(repository)", reason: reason, credential: credential?.entry.name)
            await respond(502, "corral gateway: \(reason)", close: true)
            return false
        }
    }

    /// What git is told, and what is recorded, when the upstream says no.
    static func explainUpstreamRefusal(status: Int, repository: GitRepository, credential: ResolvedCredential?) -> (
        reply: HTTPFailure, reason: String
    ) {
        let host = repository.host
        let path = "\(repository.owner)/\(repository.name)"
        switch (status, credential) {
        case (401, nil), (403, nil):
            return (
                HTTPFailure(
                    403,
                    "corral gateway: \(host) asks for a credential for \(path), and the vault holds none whose scope covers \(repository); store one with `corral vault put NAME --scope \(host)/\(repository.owner)`"
                ),
                "the upstream asks for a credential and the vault has none for this repository"
            )
        case (401, let credential?):
            return (
                HTTPFailure(
                    403,
                    "corral gateway: \(host) refused the vault credential '\(credential.entry.name)' for \(path) (HTTP 401): it may be revoked or expired; replace it with `corral vault put \(credential.entry.name) --scope \(credential.entry.scope)`"
                ),
                "the upstream refused the credential (HTTP 401): revoked or expired?"
            )
        case (403, let credential?):
            return (
                HTTPFailure(
                    403,
                    "corral gateway: \(host) denied \(path) to the vault credential '\(credential.entry.name)' (HTTP 403): the token may lack access to this repository"
                ),
                "the upstream denied the credential access (HTTP 403)"
            )
        case (404, _):
            return (
                HTTPFailure(
                    404, "corral gateway: \(host) has no repository \(path), or the credential cannot see it (HTTP 404)"
                ),
                "the upstream has no such repository (HTTP 404)"
            )
        default:
            return (
                HTTPFailure(502, "corral gateway: \(host) answered HTTP \(status) for \(path)"),
                "the upstream answered HTTP \(status)"
            )
        }
    }
}
