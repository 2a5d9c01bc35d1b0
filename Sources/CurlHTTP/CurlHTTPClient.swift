import CorralCore
import Logging

/// HTTP/1.1 through libcurl to one endpoint: a unix socket, TCP, or TLS with client
/// certificates.
///
/// Responses stream as async sequences; request bodies may stream too. Cancelling the task
/// that waits on a request aborts its transfer at once. The client owns one event-loop thread
/// (see `CurlEventLoop`); call `shutdown()` when done with it.
public final class CurlHTTPClient: Sendable {
    public struct Configuration: Sendable {
        public var connectTimeout: Duration = .seconds(10)
        /// Bytes of response body buffered before the transfer is paused until read.
        public var responseBufferLimit: Int = 1 << 20
        /// Bytes of streamed request body queued before the producer waits.
        public var requestBufferLimit: Int = 1 << 20
        /// Idle connections kept for reuse.
        public var maxConnections: Int = 16
        /// Largest body `execute` buffers in memory.
        public var maxBufferedResponse: Int = 64 << 20

        public init() {}
    }

    public let endpoint: HTTPEndpoint
    public let configuration: Configuration
    private let loop: CurlEventLoop
    private let logger: Logger

    public init(endpoint: HTTPEndpoint, configuration: Configuration = Configuration(), logger: Logger? = nil) throws {
        self.endpoint = endpoint
        self.configuration = configuration
        self.logger = logger ?? Logger(label: "corral.http")
        self.loop = try CurlEventLoop(maxConnections: configuration.maxConnections)
    }

    deinit {
        loop.stop()
    }

    /// Stops the event-loop thread. Requests in flight end with a cancellation error.
    public func shutdown() {
        loop.stop()
    }

    /// Sends `request` and hands the response head and a streaming body to `body`. The
    /// transfer lives as long as the closure: when it returns or throws, an unfinished
    /// transfer is aborted and its connection closed.
    public func withStreamingResponse<T: Sendable>(
        _ request: HTTPRequest,
        _ body: (HTTPResponseHead, HTTPResponseBody) async throws -> T
    ) async throws -> T {
        try Task.checkCancellation()
        let transfer = try CurlTransfer(request: request, endpoint: endpoint, configuration: configuration)
        logger.trace("http request", metadata: ["method": "\(request.method)", "path": "\(request.path)"])
        return try await withTaskCancellationHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                if case .stream(let stream) = request.body {
                    group.addTask { await transfer.pumpUpload(stream) }
                }
                loop.add(transfer)
                do {
                    let head = try await transfer.head()
                    let result = try await body(head, HTTPResponseBody(transfer: transfer))
                    transfer.cancel()
                    group.cancelAll()
                    return result
                } catch {
                    transfer.cancel()
                    group.cancelAll()
                    throw error
                }
            }
        } onCancel: {
            transfer.cancel()
        }
    }

    /// Sends `request` and returns the whole response, refusing bodies larger than
    /// `configuration.maxBufferedResponse`.
    public func execute(_ request: HTTPRequest) async throws -> HTTPResponse {
        let limit = configuration.maxBufferedResponse
        return try await withStreamingResponse(request) { head, body in
            var data: [UInt8] = []
            for try await chunk in body {
                if data.count + chunk.count > limit {
                    throw CorralError(
                        .resourceExhausted,
                        "response to \(request.method) \(request.path) is larger than \(ByteSize(bytes: Int64(limit)))")
                }
                data.append(contentsOf: chunk)
            }
            return HTTPResponse(head: head, body: data)
        }
    }
}

/// A response body as it arrives, in chunks. Read it once.
public struct HTTPResponseBody: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    let transfer: CurlTransfer

    public struct AsyncIterator: AsyncIteratorProtocol {
        let transfer: CurlTransfer
        public mutating func next() async throws -> [UInt8]? {
            try await transfer.nextChunk()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(transfer: transfer) }

    /// Reads the rest of the body, up to `limit` bytes.
    public func collect(upTo limit: Int) async throws -> [UInt8] {
        var data: [UInt8] = []
        for try await chunk in self {
            guard data.count + chunk.count <= limit else {
                throw CorralError(.resourceExhausted, "response body is larger than \(ByteSize(bytes: Int64(limit)))")
            }
            data.append(contentsOf: chunk)
        }
        return data
    }
}
