import CorralCore
import CurlHTTP
import Foundation
import Synchronization
import TestSupport
import Testing

/// Most cases run twice: through libcurl, and with `directUnixSocket` (no libcurl for a body in
/// memory; a streamed one still takes libcurl).
@Suite("HTTP over a unix socket, against an in-process stub server")
struct TransportTests {
    func withServer<T>(
        direct: Bool = false,
        _ handler: @escaping StubHTTPServer.Handler,
        _ body: (CurlHTTPClient, StubHTTPServer) async throws -> T
    ) async throws -> T {
        let path = "/tmp/corral-stub-\(UUID().uuidString.prefix(8)).sock"
        let server = try StubHTTPServer(unixSocket: path, handler: handler)
        var configuration = CurlHTTPClient.Configuration()
        configuration.directUnixSocket = direct
        let client = try CurlHTTPClient(endpoint: .unixSocket(path: path), configuration: configuration)
        defer {
            client.shutdown()
            server.stop()
        }
        return try await body(client, server)
    }

    @Test("a Content-Length body arrives whole, with status and headers", arguments: [false, true])
    func contentLength(direct: Bool) async throws {
        try await withServer(
            direct: direct,
            { request, connection in
                connection.respond(status: 200, headers: ["X-Seen": request.target], body: Array("hello".utf8))
                return true
            }
        ) { client, _ in
            let response = try await client.execute(HTTPRequest(.get, "/v1.41/_ping?x=1"))
            #expect(response.status == 200)
            #expect(response.bodyText == "hello")
            #expect(response.head.headers["x-seen"] == "/v1.41/_ping?x=1")
        }
    }

    @Test("a chunked body is reassembled across chunk boundaries", arguments: [false, true])
    func chunked(direct: Bool) async throws {
        try await withServer(
            direct: direct,
            { _, connection in
                connection.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for piece in ["a", "bc", String(repeating: "d", count: 70000), "e"] {
                    connection.write(String(piece.utf8.count, radix: 16) + "\r\n" + piece + "\r\n")
                }
                connection.write("0\r\n\r\n")
                return true
            }
        ) { client, _ in
            let response = try await client.execute(HTTPRequest(.get, "/chunks"))
            #expect(response.bodyText == "abc" + String(repeating: "d", count: 70000) + "e")
        }
    }

    @Test("a close-delimited body ends when the server closes", arguments: [false, true])
    func closeDelimited(direct: Bool) async throws {
        try await withServer(
            direct: direct,
            { _, connection in
                connection.write("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n")
                connection.write("first ")
                connection.write("second")
                connection.close()
                return false
            }
        ) { client, _ in
            // forbidReuse takes libcurl; the direct exchange closes its connection anyway.
            let response = try await client.execute(HTTPRequest(.post, "/exec/x/start", forbidReuse: !direct))
            #expect(response.bodyText == "first second")
        }
    }

    @Test("error statuses come back as responses with the server's message", arguments: [false, true])
    func errorStatus(direct: Bool) async throws {
        try await withServer(
            direct: direct,
            { _, connection in
                connection.respond(status: 404, json: #"{"message":"No such container: nope"}"#)
                return true
            }
        ) { client, _ in
            let response = try await client.execute(HTTPRequest(.get, "/containers/nope/json"))
            #expect(response.status == 404)
            #expect(response.bodyText.contains("No such container"))
        }
    }

    @Test("request bodies arrive intact, in memory and streamed chunked", arguments: [false, true])
    func requestBodies(direct: Bool) async throws {
        let payload = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try await withServer(
            direct: direct,
            { request, connection in
                connection.respond(status: 200, body: Array("\(request.body.count) \(request.chunked)".utf8))
                return true
            }
        ) { client, server in
            let small = try await client.execute(HTTPRequest(.post, "/small", body: .bytes(Array("{}".utf8))))
            #expect(small.bodyText == "2 false")

            let stream = AsyncThrowingStream<[UInt8], any Error> { continuation in
                var offset = 0
                var size = 1
                while offset < payload.count {
                    let end = min(payload.count, offset + size)
                    continuation.yield(Array(payload[offset..<end]))
                    offset = end
                    size = size * 3 + 7  // odd, growing chunk sizes
                }
                continuation.finish()
            }
            let streamed = try await client.execute(HTTPRequest(.put, "/archive", body: .stream(stream)))
            #expect(streamed.bodyText == "\(payload.count) true")
            #expect(server.requests.last?.body == payload)
        }
    }

    @Test("a failing body producer aborts the request with an error")
    func failingProducer() async throws {
        struct ProducerFailed: Error {}
        try await withServer(
            { _, connection in
                connection.respond(status: 200)
                return true
            }
        ) { client, _ in
            let stream = AsyncThrowingStream<[UInt8], any Error> { continuation in
                continuation.yield(Array(repeating: 1, count: 1000))
                continuation.finish(throwing: ProducerFailed())
            }
            await #expect(throws: CorralError.self) {
                _ = try await client.execute(HTTPRequest(.put, "/archive", body: .stream(stream)))
            }
        }
    }

    @Test("plain requests reuse one connection")
    func connectionReuse() async throws {
        try await withServer(
            { _, connection in
                connection.respond(status: 200, body: Array("ok".utf8))
                return true
            }
        ) { client, server in
            for _ in 0..<20 {
                let response = try await client.execute(HTTPRequest(.get, "/_ping"))
                #expect(response.bodyText == "ok")
            }
            #expect(server.connectionCount == 1)
        }
    }

    @Test("cancelling a task aborts its transfer mid-stream and closes the connection", arguments: [false, true])
    func cancellationMidStream(direct: Bool) async throws {
        let peerClosed = Mutex(false)
        let (closedSignal, closedContinuation) = AsyncStream<Void>.makeStream()
        try await withServer(
            direct: direct,
            { _, connection in
                connection.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                // Then say nothing more, until the client goes away.
                connection.waitForPeerClose()
                peerClosed.withLock { $0 = true }
                closedContinuation.yield()
                return false
            }
        ) { client, _ in
            let (firstSignal, firstContinuation) = AsyncStream<String>.makeStream()
            let task = Task {
                try await client.withStreamingResponse(HTTPRequest(.get, "/events")) { _, body in
                    for try await chunk in body {
                        firstContinuation.yield(String(decoding: chunk, as: UTF8.self))
                    }
                    return "ended"
                }
            }
            var firstIterator = firstSignal.makeAsyncIterator()
            #expect(await firstIterator.next() == "first")
            task.cancel()
            let result = await task.result
            #expect(throws: (any Error).self) { try result.get() }
            var closedIterator = closedSignal.makeAsyncIterator()
            await closedIterator.next()
            #expect(peerClosed.withLock { $0 })
        }
    }

    @Test("leaving the closure early ends an endless stream", arguments: [false, true])
    func scopedLifetime(direct: Bool) async throws {
        try await withServer(
            direct: direct,
            { _, connection in
                connection.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                while connection.write("3\r\nabc\r\n") {}
                return false
            }
        ) { client, _ in
            let first = try await client.withStreamingResponse(HTTPRequest(.get, "/forever")) { _, body in
                var iterator = body.makeAsyncIterator()
                return try await iterator.next()
            }
            #expect(first?.isEmpty == false)
            // The client still works afterwards.
        }
    }

    @Test("a big body streams through with bounded buffering", arguments: [false, true])
    func bigBody(direct: Bool) async throws {
        let total = 40 << 20
        try await withServer(
            direct: direct,
            { _, connection in
                connection.write("HTTP/1.1 200 OK\r\nContent-Length: \(total)\r\n\r\n")
                let block = [UInt8](repeating: 7, count: 1 << 16)
                var sent = 0
                while sent < total {
                    guard connection.write(block) else { break }
                    sent += block.count
                }
                return true
            }
        ) { client, _ in
            let (count, largest) = try await client.withStreamingResponse(HTTPRequest(.get, "/big")) { _, body in
                var count = 0
                var largest = 0
                for try await chunk in body {
                    count += chunk.count
                    largest = max(largest, chunk.count)
                }
                return (count, largest)
            }
            #expect(count == total)
            // The loop pauses at 1 MiB unread, so no single delivery is much larger.
            #expect(largest <= 2 << 20)
        }
    }

    @Test("a socket nobody listens on gives an unavailable error naming it", arguments: [false, true])
    func deadSocket(direct: Bool) async throws {
        let path = "/tmp/corral-nobody-\(UUID().uuidString.prefix(8)).sock"
        var configuration = CurlHTTPClient.Configuration()
        configuration.directUnixSocket = direct
        let client = try CurlHTTPClient(endpoint: .unixSocket(path: path), configuration: configuration)
        defer { client.shutdown() }
        do {
            _ = try await client.execute(HTTPRequest(.get, "/_ping"))
            Issue.record("expected an error")
        } catch let error as CorralError {
            #expect(error.code == .unavailable)
            #expect(error.description.contains(path))
            #expect(error.description.contains("no such socket"))
        }
    }

    @Test("direct: one connection per request, chunk extensions and trailers, a cut body is an error")
    func directFraming() async throws {
        try await withServer(
            direct: true,
            { request, connection in
                switch request.target {
                case "/ext":
                    connection.write(
                        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Padded: \t a b \t\r\nX-Empty:\r\n"
                            + "Transfer-Encoding: chunked\r\n\r\n")
                    connection.write("3 ;name=value\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n")
                    return true
                case "/cut":
                    connection.write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                    connection.close()
                    return false
                case "/head":
                    connection.write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
                    return true
                default:
                    connection.respond(status: 200, body: Array("ok".utf8))
                    return true
                }
            }
        ) { client, server in
            for _ in 0..<5 {
                let ping = try await client.execute(HTTPRequest(.get, "/_ping"))
                #expect(ping.bodyText == "ok")
            }
            #expect(server.connectionCount == 5)
            let extended = try await client.execute(HTTPRequest(.get, "/ext"))
            #expect(extended.bodyText == "abc")
            #expect(extended.head.headers["x-padded"] == "a b")
            #expect(extended.head.headers["x-empty"] == "")
            let head = try await client.execute(HTTPRequest(.head, "/head"))
            #expect(head.status == 200 && head.body.isEmpty)
            let cut = await #expect(throws: CorralError.self) {
                _ = try await client.execute(HTTPRequest(.get, "/cut"))
            }
            #expect(cut?.description.contains("before the answer was whole") == true, "\(String(describing: cut))")
        }
    }

    @Test("a request timeout ends a request that never answers", arguments: [false, true])
    func timeout(direct: Bool) async throws {
        try await withServer(
            direct: direct,
            { _, connection in
                connection.waitForPeerClose()
                return false
            }
        ) { client, _ in
            do {
                _ = try await client.execute(HTTPRequest(.get, "/slow", timeout: .milliseconds(200)))
                Issue.record("expected a timeout")
            } catch let error as CorralError {
                #expect(error.code == .timeout)
            }
        }
    }

    @Test(
        "endpoints parse from the forms users type",
        arguments: [
            ("unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
            ("/run/x.sock", "unix:///run/x.sock"),
            ("tcp://127.0.0.1:2375", "http://127.0.0.1:2375"),
            ("https://api.example.test/v1/", "https://api.example.test:443/v1"),
            ("http://[::1]:8080", "http://[::1]:8080"),
        ])
    func endpoints(text: String, expected: String) throws {
        #expect(try HTTPEndpoint(parsing: text).description == expected)
    }

    @Test(
        "malformed endpoints are refused",
        arguments: ["", "docker.sock", "ftp://x", "tcp://host", "unix://relative", "tcp://h:99999"])
    func badEndpoints(text: String) {
        #expect(throws: CorralError.self) { try HTTPEndpoint(parsing: text) }
    }
}
