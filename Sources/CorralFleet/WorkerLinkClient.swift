import CorralAPI
import CorralCore
import CorralLink
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP2
import NIOHTTPTypes
import NIOHTTPTypesHTTP2

/// The control plane's end of one worker link: after the 101 corrald is the HTTP/2 client on
/// the connection the worker dialled, and each call is a stream of its own. HTTP/2 gives every
/// stream its own flow-control window, so a caller that stops reading stalls only its call.
package final class WorkerLinkClient: Sendable {
    package typealias Stream = NIOAsyncChannel<HTTPResponsePart, HTTPRequestPart>

    package let channel: any Channel
    package let multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<Void>
    package let epoch: Int64
    /// The worker's name, for errors.
    package let worker: String

    /// Configures HTTP/2 (client) on `channel`; call on its event loop, after the 101 is written.
    package init(channel: any Channel, epoch: Int64, worker: String, logger: Logger) throws {
        self.channel = channel
        self.epoch = epoch
        self.worker = worker
        var configuration = NIOHTTP2Handler.Configuration()
        // Calls carry archives and command output: 1 MiB per stream before the worker waits.
        configuration.connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 1000),
            HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 1 << 16),
            // Command output and archives in frames of up to 1 MiB rather than HTTP/2's 16 KiB:
            // each frame costs a hop through the stream's channel and tasks.
            HTTP2Setting(parameter: .maxFrameSize, value: WorkerLinkLimits.maxFrameSize),
        ]
        // The windows this end keeps open: HTTP/2's 64 KiB would make a worker wait for a window
        // update every 64 KiB of output, on the connection and on each stream.
        configuration.connection.targetWindowSize = 16 << 20
        configuration.stream.targetWindowSize = 1 << 20
        multiplexer = try channel.pipeline.syncOperations.configureAsyncHTTP2Pipeline(
            mode: .client, configuration: configuration
        ) { stream in
            // The worker opens no streams of its own.
            stream.close()
        }
        // A connection error (bytes that are no HTTP/2 frame, a protocol violation) ends the
        // link: swift-nio-http2 answers it with GOAWAY but leaves the connection open.
        try channel.pipeline.syncOperations.addHandler(CloseOnConnectionError(worker: worker, logger: logger))
    }

    package var isActive: Bool { channel.isActive }

    package func close() { channel.close(promise: nil) }

    /// One call: the head, then the body as it comes. Returns the answer's head and its body as
    /// a bounded channel; `finished` completes when the stream is done both ways.
    package func call(
        _ head: HTTPRequest, body: (some AsyncSequence<ByteBuffer, any Error> & Sendable)?
    ) async throws -> (response: HTTPResponse, body: ByteChannel, task: Task<Void, any Error>) {
        let stream: Stream
        do {
            stream = try await multiplexer.openStream { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTPClientCodec())
                    return try Stream(wrappingChannelSynchronously: channel)
                }
            }
        } catch {
            throw linkDown(error)
        }
        let answer = AsyncThrowingStream<HTTPResponse, any Error>.makeStream()
        let bodyChannel = ByteChannel(capacity: 1 << 20)
        let task = Task {
            do {
                try await stream.executeThenClose { inbound, outbound in
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            try await outbound.write(.head(head))
                            if let body {
                                for try await chunk in body { try await outbound.write(.body(chunk)) }
                            }
                            try await outbound.write(.end(nil))
                        }
                        var parts = inbound.makeAsyncIterator()
                        var sawHead = false
                        while let part = try await parts.next() {
                            switch part {
                            case .head(let response):
                                // 1xx heads are interim; the worker sends none today.
                                guard response.status.kind != .informational else { continue }
                                sawHead = true
                                answer.continuation.yield(response)
                                answer.continuation.finish()
                            case .body(let buffer):
                                try await bodyChannel.send(Array(buffer.readableBytesView))
                            case .end:
                                break
                            }
                        }
                        guard sawHead else { throw self.linkDown(nil) }
                        bodyChannel.finish()
                        // The answer is whole: a request body still under way is no longer wanted.
                        group.cancelAll()
                        _ = try? await group.next()
                    }
                }
            } catch {
                let described = describe(error)
                answer.continuation.finish(throwing: described)
                bodyChannel.finish(throwing: described)
                throw error
            }
        }
        do {
            var heads = answer.stream.makeAsyncIterator()
            guard let response = try await heads.next() else { throw linkDown(nil) }
            return (response, bodyChannel, task)
        } catch {
            task.cancel()
            throw describe(error)
        }
    }

    /// A call of the control plane's own, as `tenant`, on this link's epoch.
    package func request(_ method: HTTPRequest.Method, _ path: String, tenant: TenantID) -> HTTPRequest {
        var head = HTTPRequest(method: method, scheme: "http", authority: "worker", path: path)
        head.headerFields[corral: WorkerProtocol.tenantHeader] = tenant.rawValue
        head.headerFields[corral: WorkerProtocol.epochHeader] = String(epoch)
        return head
    }

    /// A GET (as `tenant`: the operator's by default) whose JSON answer decodes as `T`; a
    /// non-2xx answer becomes the worker's error.
    package func get<T: Decodable>(_ path: String, as type: T.Type, tenant: TenantID = .local) async throws -> T {
        try await send(.get, path, json: Optional<Int>.none, as: type, tenant: tenant)
    }

    /// A call of the control plane's own (the heartbeat, pool targets: the operator's), with
    /// `json` as its body when given; the JSON answer decodes as `T`.
    package func send<T: Decodable>(
        _ method: HTTPRequest.Method, _ path: String, json: (some Encodable)?, as type: T.Type,
        tenant: TenantID = .local
    ) async throws -> T {
        var head = request(method, path, tenant: tenant)
        var upload: AsyncThrowingStream<ByteBuffer, any Error>?
        if let json {
            let bytes = try JSONEncoder().encode(json)
            head.headerFields[.contentType] = "application/json"
            upload = AsyncThrowingStream {
                $0.yield(ByteBuffer(bytes: bytes)); $0.finish()
            }
        }
        let (response, body, task) = try await call(head, body: upload)
        var bytes: [UInt8] = []
        while let chunk = try await body.receive() {
            bytes += chunk
            guard bytes.count <= 16 << 20 else {
                task.cancel()
                throw CorralError(.payloadTooLarge, "the worker's answer to \(path) is larger than 16 MiB")
            }
        }
        _ = try? await task.value
        guard (200..<300).contains(response.status.code) else {
            if let error = try? JSONDecoder().decode(APIErrorBody.self, from: Data(bytes)) { throw error.corralError }
            throw CorralError(.unavailable, "the worker answered \(path) with \(response.status.code)")
        }
        return try CorralClient.decoder().decode(T.self, from: Data(bytes))
    }

    /// Removes `sandbox` on the worker, as its tenant; a sandbox already gone is no error.
    package func removeSandbox(_ sandbox: WorkerSandbox) async throws {
        let head = request(.delete, "/v1/sandboxes/\(sandbox.id)", tenant: sandbox.tenant)
        let (response, body, task) = try await call(head, body: Optional<EmptyBody>.none)
        while try await body.receive() != nil {}
        _ = try? await task.value
        guard (200..<300).contains(response.status.code) || response.status.code == 404 else {
            throw CorralError(.unavailable, "the worker answered the removal with \(response.status.code)")
        }
    }

    package func describe(_ error: any Error) -> any Error {
        if error is CorralError || error is CancellationError { return error }
        return linkDown(error)
    }

    /// A call that the link's end cut short: whether it ran on the worker is not known.
    package func linkDown(_ error: (any Error)?) -> CorralError {
        var failure = CorralError(
            .unavailable, "the link to worker '\(worker)' is down: the call ended without an answer",
            hint: "the worker dials again by itself; a call that changes things may or may not have run",
            underlying: error)
        failure.retryAfterSeconds = 2
        return failure
    }
}

/// Closes a link whose HTTP/2 connection failed (after the HTTP/2 handler, which reports it).
/// swift-nio-http2 reports a stream's errors the same way (a frame for a stream that just
/// closed, a bad header on one call); those cost that stream (the handler resets it), never
/// the link and every other call on it.
package final class CloseOnConnectionError: ChannelInboundHandler, Sendable {
    package typealias InboundIn = Any
    package let worker: String
    package let logger: Logger

    package init(worker: String, logger: Logger) {
        self.worker = worker
        self.logger = logger
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if Self.isStreamScoped(error) {
            logger.debug(
                "a call's stream failed on a worker's link", metadata: ["worker": "\(worker)", "error": "\(error)"])
        } else {
            logger.warning(
                "closing a worker's link: its HTTP/2 connection failed",
                metadata: ["worker": "\(worker)", "error": "\(error)"])
            context.close(promise: nil)
        }
        context.fireErrorCaught(error)
    }

    /// Errors swift-nio-http2 raises for one stream (it answers them with RST_STREAM).
    package static func isStreamScoped(_ error: any Error) -> Bool {
        switch error {
        case is NIOHTTP2Errors.NoSuchStream, is NIOHTTP2Errors.StreamClosed,
            is NIOHTTP2Errors.BadStreamStateTransition, is NIOHTTP2Errors.TrailersWithoutEndStream,
            is NIOHTTP2Errors.MissingPseudoHeader, is NIOHTTP2Errors.DuplicatePseudoHeader,
            is NIOHTTP2Errors.PseudoHeaderAfterRegularHeader, is NIOHTTP2Errors.UnknownPseudoHeader,
            is NIOHTTP2Errors.UnsupportedPseudoHeader, is NIOHTTP2Errors.InvalidPseudoHeaders,
            is NIOHTTP2Errors.MissingHostHeader, is NIOHTTP2Errors.DuplicateHostHeader,
            is NIOHTTP2Errors.EmptyPathHeader, is NIOHTTP2Errors.InvalidStatusValue,
            is NIOHTTP2Errors.ForbiddenHeaderField, is NIOHTTP2Errors.InvalidPseudoHeaderValue,
            is NIOHTTP2Errors.ContentLengthViolated, is NIOHTTP2Errors.ContentLengthHeadersMismatch,
            is NIOHTTP2Errors.ContentLengthHeaderNegative, is NIOHTTP2Errors.ContentLengthHeaderMalformedValue:
            return true
        default:
            return false
        }
    }
}

/// No body: a GET's.
package struct EmptyBody: AsyncSequence, Sendable {
    package typealias Element = ByteBuffer
    package struct AsyncIterator: AsyncIteratorProtocol {
        package mutating func next() async throws -> ByteBuffer? { nil }
    }
    package func makeAsyncIterator() -> AsyncIterator { AsyncIterator() }
}

extension HTTPFields {
    /// A field by one of corral's own names (`Corral-Tenant`), which are valid field names.
    package subscript(corral name: String) -> String? {
        get { HTTPField.Name(name).flatMap { self[$0] } }
        set { if let field = HTTPField.Name(name) { self[field] = newValue } }
    }
}
