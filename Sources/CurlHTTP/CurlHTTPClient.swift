import CorralCore
import Logging
import Synchronization

/// HTTP/1.1 through libcurl to one endpoint: a unix socket, TCP, or TLS with client
/// certificates.
///
/// Responses stream as async sequences; request bodies may stream too. Cancelling the task
/// that waits on a request aborts its transfer at once. The client owns one event-loop thread
/// (see `CurlEventLoop`), started with its first curl transfer; call `shutdown()` when done.
/// With `directUnixSocket`, plain requests to a unix socket skip libcurl (`SocketTransfer`).
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
        /// Requests to a unix socket whose body is in memory (or absent) go over the socket
        /// directly, one connection each, without loading libcurl: for a short-lived command
        /// line, loading libcurl costs more than its call. Streamed uploads and connections an
        /// endpoint takes over (`forbidReuse`) still go through libcurl.
        public var directUnixSocket = false

        public init() {}
    }

    public let endpoint: HTTPEndpoint
    public let configuration: Configuration
    /// Started by the first curl transfer: libcurl is loaded then, not before.
    private let loop = Mutex<(loop: CurlEventLoop?, stopped: Bool)>((nil, false))
    private let logger: Logger

    public init(endpoint: HTTPEndpoint, configuration: Configuration = Configuration(), logger: Logger? = nil) throws {
        self.endpoint = endpoint
        self.configuration = configuration
        self.logger = logger ?? Logger(label: "corral.http")
        if !configuration.directUnixSocket { _ = try curlLoop() }
    }

    deinit {
        loop.withLock { $0.loop?.stop() }
    }

    /// Stops the event-loop thread. Requests in flight end with a cancellation error.
    public func shutdown() {
        loop.withLock { state in
            state.stopped = true
            state.loop?.stop()
        }
    }

    private func curlLoop() throws -> CurlEventLoop {
        try loop.withLock { state in
            if let loop = state.loop { return loop }
            let loop = try CurlEventLoop(maxConnections: configuration.maxConnections)
            if state.stopped { loop.stop() }
            state.loop = loop
            return loop
        }
    }

    /// Sends `request` and hands the response head and a streaming body to `body`. The
    /// transfer lives as long as the closure: when it returns or throws, an unfinished
    /// transfer is aborted and its connection closed.
    public func withStreamingResponse<T: Sendable>(
        _ request: HTTPRequest,
        _ body: (HTTPResponseHead, HTTPResponseBody) async throws -> T
    ) async throws -> T {
        try Task.checkCancellation()
        if configuration.directUnixSocket, case .unixSocket(let path) = endpoint, !request.forbidReuse,
            !request.body.isStream
        {
            return try await direct(request, path: path, body)
        }
        let loop = try curlLoop()
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
                    let result = try await body(head, HTTPResponseBody(source: transfer))
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

    private func direct<T: Sendable>(
        _ request: HTTPRequest, path: String, _ body: (HTTPResponseHead, HTTPResponseBody) async throws -> T
    ) async throws -> T {
        let transfer = SocketTransfer(
            request: request, path: path, endpoint: endpoint, highWater: configuration.responseBufferLimit)
        logger.trace("http request", metadata: ["method": "\(request.method)", "path": "\(request.path)"])
        return try await withTaskCancellationHandler {
            transfer.start()
            do {
                let result = try await body(try await transfer.head(), HTTPResponseBody(source: transfer))
                transfer.cancel()
                return result
            } catch {
                transfer.cancel()
                throw error
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
    let source: any ResponseSource

    public struct AsyncIterator: AsyncIteratorProtocol {
        let source: any ResponseSource
        public mutating func next() async throws -> [UInt8]? {
            try await source.nextChunk()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(source: source) }

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

/// Where a response body's chunks come from: a curl transfer or a direct socket exchange.
protocol ResponseSource: Sendable {
    /// The next piece of the body; nil at its end.
    func nextChunk() async throws -> [UInt8]?
}

extension CurlTransfer: ResponseSource {}

extension HTTPRequestBody {
    var isStream: Bool {
        if case .stream = self { return true }
        return false
    }
}
