import CorralCore
import CorralSandbox
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// HTTP to a server listening inside a sandbox, for the sandbox's owner: what E2B's
/// `get_host(port)` URLs and its `E2b-Sandbox-Port` routing reach.
///
/// The sandbox's network is loopback only, so corrald cannot dial the port. Each request runs a
/// relay inside the sandbox instead (bash's /dev/tcp to 127.0.0.1:PORT, as the sandbox's user):
/// the request goes in on the relay's stdin as HTTP/1.0 with `Connection: close`, and the
/// server's answer comes back on its stdout until the server closes. HTTP/1.0 keeps the answer
/// unchunked and its end the connection's. Upgrades (WebSockets) are not carried.
///
/// Ports are not public as E2B's are by default: every request must carry the sandbox's access
/// token, as `X-Access-Token` or as E2B's `e2b-traffic-access-token` (the SDK's
/// `traffic_access_token`, which corral sets to the same token).
package struct E2BPortProxy: Sendable {
    package let plane: E2BDataPlane

    /// The largest request body carried: it is read whole before the relay starts.
    package static let maxBodyBytes = 16 << 20
    /// The longest one request may take inside the sandbox.
    package static let timeout: Duration = .seconds(300)
    /// The relay's exit status when the port does not accept.
    package static let notOpen = 97

    package struct Target: Sendable {
        package var sandbox: String
        package var port: Int
    }

    /// The sandbox port a request is for, when it is not envd's: `E2b-Sandbox-Port` with
    /// `E2b-Sandbox-Id`, or a Host of E2B's form `PORT-SANDBOXID.DOMAIN`.
    package static func target(_ request: Request) -> Target? {
        if let portText = E2BHeaders.value(request, "e2b-sandbox-port"), portText != E2BDataPlane.envdPort,
            let id = E2BHeaders.value(request, "e2b-sandbox-id")
        {
            return Target(sandbox: id, port: Int(portText) ?? 0)
        }
        guard let host = request.head.authority ?? E2BHeaders.value(request, "host"),
            let label = host.split(separator: ".").first, let dash = label.firstIndex(of: "-"),
            let port = Int(label[..<dash]), SandboxID(String(label[label.index(after: dash)...])) != nil
        else { return nil }
        guard port != Int(E2BDataPlane.envdPort) else { return nil }
        return Target(sandbox: String(label[label.index(after: dash)...]), port: port)
    }

    package func serve(_ request: Request, target: Target) async -> Response {
        do {
            return try await relay(request, target: target)
        } catch {
            return E2BAPIError(converting: error).response
        }
    }

    private func relay(_ request: Request, target: Target) async throws -> Response {
        guard (1...65535).contains(target.port) else {
            throw E2BAPIError.badRequest("E2b-Sandbox-Port must be a port from 1 to 65535")
        }
        let sandbox = try plane.sandbox(
            idText: target.sandbox,
            presented: [
                E2BHeaders.value(request, "x-access-token"), E2BHeaders.value(request, "e2b-traffic-access-token"),
            ])
        let body = try await collect(request, limit: Self.maxBodyBytes)
        let command = try await sandbox.start(
            SandboxCommand(
                [
                    "/bin/bash", "-c",
                    "exec 3<>/dev/tcp/127.0.0.1/\"$1\" || exit \(Self.notOpen); cat <&3 & cat >&3; wait",
                    "relay", String(target.port),
                ], timeout: Self.timeout), stdin: true)
        do {
            try await command.write(stdin: Self.head(of: request, port: target.port, bodyBytes: body.count) + body)
            try await command.closeStdin()
        } catch let error as CorralError where error.code == .conflict {
            // The relay ended before it took the request (the port refused it): its status,
            // read below, says so.
        }

        // The answer's head, then the rest streams.
        var received: [UInt8] = []
        var split: Int?
        while split == nil, let chunk = try await command.nextChunk() {
            guard chunk.stream == .stdout else { continue }
            received += chunk.bytes
            split = E2BMultipart.find([13, 10, 13, 10], in: received, from: 0)
            guard received.count <= 64 << 10 || split != nil else {
                command.detach()
                throw E2BAPIError(status: 502, message: "the server on port \(target.port) sent a head over 64 KiB")
            }
        }
        guard let split else {
            let status = try await command.wait()
            if status.exitCode == Self.notOpen || received.isEmpty {
                throw E2BAPIError(
                    status: 502,
                    message:
                        "The sandbox \(sandbox.id) is running but port is not open: nothing answers on port \(target.port)"
                )
            }
            throw E2BAPIError(status: 502, message: "the server on port \(target.port) sent no HTTP answer")
        }
        let (status, headers) = try Self.parseHead(Array(received[..<split]), port: target.port)
        let rest = Array(received[(split + 4)...])
        return Response(
            status: status, headers: headers,
            body: ResponseBody { writer in
                if !rest.isEmpty { try await writer.write(ByteBuffer(bytes: rest)) }
                while let chunk = try await command.nextChunk() {
                    guard chunk.stream == .stdout else { continue }
                    try await writer.write(ByteBuffer(bytes: chunk.bytes))
                }
                try await writer.finish(nil)
            })
    }

    /// Headers that belong to one hop, or to E2B's routing and tokens: never passed on.
    package static let dropped: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "content-length", "host", "x-access-token", "e2b-traffic-access-token", "e2b-sandbox-id",
        "e2b-sandbox-port", "expect",
    ]

    package static func head(of request: Request, port: Int, bodyBytes: Int) -> [UInt8] {
        var path = request.uri.path.isEmpty ? "/" : request.uri.path
        if let query = request.uri.query, !query.isEmpty { path += "?" + query }
        var text = "\(request.method.rawValue) \(path) HTTP/1.0\r\nHost: localhost:\(port)\r\nConnection: close\r\n"
        for field in request.headers where !dropped.contains(field.name.canonicalName) {
            text += "\(field.name.rawName): \(field.value)\r\n"
        }
        if bodyBytes > 0 || [.post, .put, .patch].contains(request.method) {
            text += "Content-Length: \(bodyBytes)\r\n"
        }
        return Array((text + "\r\n").utf8)
    }

    package static func parseHead(_ head: [UInt8], port: Int) throws -> (HTTPResponse.Status, HTTPFields) {
        let lines = String(decoding: head, as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines.first?.split(separator: " ", maxSplits: 2) ?? []
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/"), let code = Int(statusParts[1]),
            (100...599).contains(code)
        else {
            throw E2BAPIError(status: 502, message: "the server on port \(port) sent no HTTP status line")
        }
        var headers = HTTPFields()
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            guard let field = HTTPField.Name(name), !dropped.contains(field.canonicalName) || field == .contentLength
            else { continue }
            headers.append(HTTPField(name: field, value: value))
        }
        return (HTTPResponse.Status(code: code), headers)
    }
}
