import CCurl
import CorralCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One HTTP exchange on a curl easy handle.
///
/// The event loop thread drives the handle and calls the callbacks below; Swift tasks wait
/// for the head and the body through continuations. All shared state sits in `state`, and
/// continuations are always resumed outside the lock. Backpressure: when more than
/// `highWater` bytes wait unread, the write callback pauses the transfer; the reader asks the
/// loop to resume it once the buffer drains.
final class CurlTransfer: @unchecked Sendable {
    // The easy handle, header list and error buffer are touched only on the loop thread
    // (setup happens before the handle is handed to the loop), and freed in deinit.
    let easy: UnsafeMutableRawPointer
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private var connectToList: UnsafeMutablePointer<curl_slist>?
    private let errorBuffer: UnsafeMutablePointer<CChar>
    let request: HTTPRequest
    let endpoint: HTTPEndpoint
    private let state = Mutex(State())
    private let highWater: Int
    private let uploadHighWater: Int
    weak var loop: CurlEventLoop?

    struct State {
        var status = 0
        var headers: [(String, String)] = []
        var head: HTTPResponseHead?
        var headWaiter: CheckedContinuation<HTTPResponseHead, any Error>?
        var chunks: [[UInt8]] = []
        var buffered = 0
        var bodyWaiter: CheckedContinuation<[UInt8]?, any Error>?
        var receivePaused = false
        var outcome: Result<Void, CorralError>?
        var cancelled = false
        // Upload side.
        var upload: [UInt8] = []
        var uploadOffset = 0
        var uploadFinished = false
        var uploadFailed = false
        var sendPaused = false
        var uploadWaiter: CheckedContinuation<Void, Never>?
    }

    init(request: HTTPRequest, endpoint: HTTPEndpoint, configuration: CurlHTTPClient.Configuration) throws {
        guard let easy = corral_curl_easy_init() else {
            throw CorralError(.internalError, "libcurl could not allocate a transfer")
        }
        self.easy = easy
        self.request = request
        self.endpoint = endpoint
        self.highWater = configuration.responseBufferLimit
        self.uploadHighWater = configuration.requestBufferLimit
        self.errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        try configure(configuration)
    }

    deinit {
        corral_curl_easy_cleanup(easy)
        if let headerList { corral_curl_slist_free_all(headerList) }
        if let connectToList { corral_curl_slist_free_all(connectToList) }
        errorBuffer.deallocate()
    }

    // MARK: Setup (before the loop sees the handle)

    private func configure(_ configuration: CurlHTTPClient.Configuration) throws {
        try set(CURLOPT_URL, endpoint.url(for: request.path))
        try set(CURLOPT_ERRORBUFFER, pointer: UnsafeMutableRawPointer(errorBuffer))
        try set(CURLOPT_NOSIGNAL, 1)
        try set(CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1)
        // Never pick up HTTP_PROXY from the environment: an engine or a gateway is addressed
        // directly, and sandboxes run with a proxy set.
        try set(CURLOPT_PROXY, "")
        try set(CURLOPT_CONNECTTIMEOUT_MS, Int(configuration.connectTimeout.milliseconds))
        if let timeout = request.timeout { try set(CURLOPT_TIMEOUT_MS, max(1, Int(timeout.milliseconds))) }
        if request.forbidReuse { try set(CURLOPT_FORBID_REUSE, 1) }
        if let connectTo = request.connectTo {
            // "HOST:PORT:TO-HOST:TO-PORT" with HOST and PORT empty: whatever the URL says.
            connectToList = corral_curl_slist_append(nil, "::\(connectTo.address):\(connectTo.port)")
            if let connectToList { try set(CURLOPT_CONNECT_TO, pointer: UnsafeMutableRawPointer(connectToList)) }
        }
        switch endpoint {
        case .unixSocket(let path):
            try set(CURLOPT_UNIX_SOCKET_PATH, path)
        case .tcp(_, _, let tls, _):
            if let tls {
                if let ca = tls.caFile { try set(CURLOPT_CAINFO, ca) }
                if let cert = tls.certificateFile { try set(CURLOPT_SSLCERT, cert) }
                if let key = tls.keyFile { try set(CURLOPT_SSLKEY, key) }
                try set(CURLOPT_SSL_VERIFYPEER, 1)
                try set(CURLOPT_SSL_VERIFYHOST, 2)
            }
            try set(CURLOPT_TCP_NODELAY, 1)
        }

        var headers = request.headers
        switch request.method {
        case .get:
            try set(CURLOPT_HTTPGET, 1)
        case .head:
            try set(CURLOPT_NOBODY, 1)
        default:
            try set(CURLOPT_CUSTOMREQUEST, request.method.rawValue)
        }
        switch request.body {
        case .empty:
            if request.method == .post || request.method == .put {
                try set(CURLOPT_POSTFIELDSIZE_LARGE, offset: 0)
                try set(CURLOPT_COPYPOSTFIELDS, "")
            }
        case .bytes(let bytes):
            try set(CURLOPT_POSTFIELDSIZE_LARGE, offset: curl_off_t(bytes.count))
            let code = bytes.withUnsafeBufferPointer { buffer in
                corral_curl_setopt_pointer(
                    easy, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: buffer.baseAddress))
            }
            try check(code, "CURLOPT_COPYPOSTFIELDS")
        case .stream:
            // UPLOAD with an unknown size sends the body chunked; CUSTOMREQUEST keeps the method.
            try set(CURLOPT_UPLOAD, 1)
            try check(
                corral_curl_setopt_data_callback(easy, CURLOPT_READFUNCTION, curlReadCallback), "CURLOPT_READFUNCTION")
            try set(CURLOPT_READDATA, pointer: Unmanaged.passUnretained(self).toOpaque())
            headers.set("Expect", "")
            headers.set("Transfer-Encoding", "chunked")
        }
        for field in headers {
            // "Name:" with nothing after it tells curl to drop a header it would add itself.
            let line = field.value.isEmpty ? "\(field.name):" : "\(field.name): \(field.value)"
            headerList = corral_curl_slist_append(headerList, line)
        }
        if let headerList { try set(CURLOPT_HTTPHEADER, pointer: UnsafeMutableRawPointer(headerList)) }

        let context = Unmanaged.passUnretained(self).toOpaque()
        try check(
            corral_curl_setopt_data_callback(easy, CURLOPT_HEADERFUNCTION, curlHeaderCallback), "CURLOPT_HEADERFUNCTION"
        )
        try set(CURLOPT_HEADERDATA, pointer: context)
        try check(
            corral_curl_setopt_data_callback(easy, CURLOPT_WRITEFUNCTION, curlWriteCallback), "CURLOPT_WRITEFUNCTION")
        try set(CURLOPT_WRITEDATA, pointer: context)
    }

    private func set(_ option: CURLoption, _ value: Int) throws {
        try check(corral_curl_setopt_long(easy, option, value), "option \(option.rawValue)")
    }

    private func set(_ option: CURLoption, _ value: String) throws {
        try check(corral_curl_setopt_string(easy, option, value), "option \(option.rawValue)")
    }

    private func set(_ option: CURLoption, offset: curl_off_t) throws {
        try check(corral_curl_setopt_offset(easy, option, offset), "option \(option.rawValue)")
    }

    private func set(_ option: CURLoption, pointer: UnsafeMutableRawPointer?) throws {
        try check(corral_curl_setopt_pointer(easy, option, pointer), "option \(option.rawValue)")
    }

    private func check(_ code: CURLcode, _ what: String) throws {
        guard code == CURLE_OK else {
            throw CorralError(
                .internalError, "libcurl refused \(what): \(String(cString: corral_curl_easy_strerror(code)))")
        }
    }

    // MARK: Callbacks (loop thread)

    fileprivate func receivedHeader(_ line: UnsafeBufferPointer<UInt8>) -> Int {
        // Trim CR/LF as bytes: in a Swift String "\r\n" is one character.
        var end = line.count
        while end > 0, line[end - 1] == UInt8(ascii: "\n") || line[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        let text = String(decoding: UnsafeBufferPointer(rebasing: line[0..<end]), as: UTF8.self)
        var waiter: CheckedContinuation<HTTPResponseHead, any Error>?
        var head: HTTPResponseHead?
        let keepGoing = state.withLock { state -> Bool in
            if state.cancelled { return false }
            if text.hasPrefix("HTTP/") {
                // A new status line starts a new header block (after 100 Continue, say).
                let parts = text.split(separator: " ", maxSplits: 2)
                state.status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
                state.headers = []
            } else if text.isEmpty {
                if state.status >= 200 && state.head == nil {
                    let made = HTTPResponseHead(status: state.status, headers: HTTPHeaders(state.headers))
                    state.head = made
                    head = made
                    waiter = state.headWaiter
                    state.headWaiter = nil
                }
            } else if let colon = text.firstIndex(of: ":") {
                let name = String(text[..<colon])
                let value = text[text.index(after: colon)...].drop { $0 == " " || $0 == "\t" }
                state.headers.append((name, String(value)))
            }
            return true
        }
        if let waiter, let head { waiter.resume(returning: head) }
        return keepGoing ? line.count : 0
    }

    fileprivate func receivedBody(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
        enum Action { case abort, pause, deliver(CheckedContinuation<[UInt8]?, any Error>?, [UInt8]) }
        let action = state.withLock { state -> Action in
            if state.cancelled { return .abort }
            if state.buffered >= highWater {
                state.receivePaused = true
                return .pause
            }
            if let waiter = state.bodyWaiter {
                state.bodyWaiter = nil
                return .deliver(waiter, Array(bytes))
            }
            state.chunks.append(Array(bytes))
            state.buffered += bytes.count
            return .deliver(nil, [])
        }
        switch action {
        case .abort: return 0
        case .pause: return corral_CURL_WRITEFUNC_PAUSE
        case .deliver(let waiter, let chunk):
            waiter?.resume(returning: chunk)
            return bytes.count
        }
    }

    fileprivate func fillUpload(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        var waiter: CheckedContinuation<Void, Never>?
        let result = state.withLock { state -> Int in
            if state.cancelled || state.uploadFailed { return corral_CURL_READFUNC_ABORT }
            let available = state.upload.count - state.uploadOffset
            if available == 0 {
                if state.uploadFinished { return 0 }
                state.sendPaused = true
                return corral_CURL_READFUNC_PAUSE
            }
            let count = min(available, buffer.count)
            state.upload.withUnsafeBytes { source in
                buffer.copyMemory(
                    from: UnsafeRawBufferPointer(rebasing: source[state.uploadOffset..<state.uploadOffset + count]))
            }
            state.uploadOffset += count
            if state.uploadOffset == state.upload.count {
                state.upload.removeAll(keepingCapacity: true)
                state.uploadOffset = 0
            }
            if state.upload.count - state.uploadOffset < uploadHighWater {
                waiter = state.uploadWaiter
                state.uploadWaiter = nil
            }
            return count
        }
        waiter?.resume()
        return result
    }

    /// The loop calls this once, when curl reports the transfer done (or the loop drops it).
    func complete(_ code: CURLcode) {
        let outcome: Result<Void, CorralError>
        if code == CURLE_OK {
            outcome = .success(())
        } else {
            outcome = .failure(transportError(code))
        }
        var responseCode = 0
        if code == CURLE_OK {
            var value = 0
            if corral_curl_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &value) == CURLE_OK { responseCode = value }
        }
        finish(outcome, responseCode: responseCode)
    }

    private func finish(_ outcome: Result<Void, CorralError>, responseCode: Int = 0) {
        var headWaiter: CheckedContinuation<HTTPResponseHead, any Error>?
        var head: HTTPResponseHead?
        var bodyWaiter: CheckedContinuation<[UInt8]?, any Error>?
        var uploadWaiter: CheckedContinuation<Void, Never>?
        state.withLock { state in
            guard state.outcome == nil else { return }
            state.outcome = outcome
            if case .success = outcome, state.head == nil {
                // A response without a final blank line (HTTP/0.9-style): make the head now.
                state.head = HTTPResponseHead(status: responseCode, headers: HTTPHeaders(state.headers))
            }
            head = state.head
            headWaiter = state.headWaiter
            state.headWaiter = nil
            if state.chunks.isEmpty {
                bodyWaiter = state.bodyWaiter
                state.bodyWaiter = nil
            }
            uploadWaiter = state.uploadWaiter
            state.uploadWaiter = nil
        }
        if let headWaiter {
            switch outcome {
            case .success: if let head { headWaiter.resume(returning: head) }
            case .failure(let error): headWaiter.resume(throwing: error)
            }
        }
        if let bodyWaiter {
            switch outcome {
            case .success: bodyWaiter.resume(returning: nil)
            case .failure(let error): bodyWaiter.resume(throwing: error)
            }
        }
        uploadWaiter?.resume()
    }

    private func transportError(_ code: CURLcode) -> CorralError {
        let detail =
            errorBuffer.pointee == 0 ? String(cString: corral_curl_easy_strerror(code)) : String(cString: errorBuffer)
        let isCancelled = state.withLock { $0.cancelled }
        if isCancelled { return CorralError(.cancelled, "\(request.method) \(request.path) was cancelled") }
        switch code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            if case .unixSocket(let path) = endpoint {
                // curl's own text speaks of "localhost port 80", which is not where we went.
                var info = stat()
                let why =
                    lstat(path, &info) != 0
                    ? "no such socket"
                    : (info.st_mode & S_IFMT) == S_IFSOCK ? "nothing accepts connections on it" : "it is not a socket"
                return CorralError(.unavailable, "cannot connect to \(endpoint): \(why)")
            }
            return CorralError(.unavailable, "cannot connect to \(endpoint): \(detail)")
        case CURLE_OPERATION_TIMEDOUT:
            return CorralError(.timeout, "\(request.method) \(request.path) on \(endpoint) timed out: \(detail)")
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
            CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR:
            return CorralError(
                .unavailable, "TLS with \(endpoint) failed: \(detail)",
                hint: "check the CA, client certificate and key (--tls-ca, --tls-cert, --tls-key)")
        case CURLE_ABORTED_BY_CALLBACK:
            return CorralError(
                .io, "\(request.method) \(request.path) on \(endpoint) was aborted while sending its body")
        default:
            return CorralError(.io, "\(request.method) \(request.path) on \(endpoint) failed: \(detail)")
        }
    }

    // MARK: Consumers (any task)

    func head() async throws -> HTTPResponseHead {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { state -> Result<HTTPResponseHead, any Error>? in
                if let head = state.head { return .success(head) }
                if case .failure(let error) = state.outcome { return .failure(error) }
                if state.cancelled { return .failure(CancellationError()) }
                state.headWaiter = continuation
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    /// The next piece of the body, all that is buffered joined; nil at the end.
    func nextChunk() async throws -> [UInt8]? {
        var resume = false
        let chunk: [UInt8]? = try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { state -> Result<[UInt8]?, any Error>? in
                if !state.chunks.isEmpty {
                    var joined = state.chunks[0]
                    if state.chunks.count > 1 {
                        joined.reserveCapacity(state.buffered)
                        for chunk in state.chunks.dropFirst() { joined.append(contentsOf: chunk) }
                    }
                    state.chunks.removeAll(keepingCapacity: true)
                    state.buffered = 0
                    if state.receivePaused {
                        state.receivePaused = false
                        resume = true
                    }
                    return .success(joined)
                }
                if state.cancelled { return .failure(CancellationError()) }
                switch state.outcome {
                case .success: return .success(nil)
                case .failure(let error): return .failure(error)
                case nil:
                    if state.receivePaused {
                        state.receivePaused = false
                        resume = true
                    }
                    state.bodyWaiter = continuation
                    return nil
                }
            }
            if let ready { continuation.resume(with: ready) }
        }
        if resume { loop?.unpause(self) }
        return chunk
    }

    /// Feeds the request body from `stream`; returns when it ends or the transfer does.
    func pumpUpload(_ stream: AsyncThrowingStream<[UInt8], any Error>) async {
        do {
            for try await chunk in stream where !chunk.isEmpty {
                guard await enqueueUpload(chunk) else { return }
            }
            endUpload(failed: false)
        } catch {
            endUpload(failed: true)
        }
    }

    private func enqueueUpload(_ chunk: [UInt8]) async -> Bool {
        var unpause = false
        let accepted = state.withLock { state -> Bool in
            guard state.outcome == nil, !state.cancelled else { return false }
            state.upload.append(contentsOf: chunk)
            if state.sendPaused {
                state.sendPaused = false
                unpause = true
            }
            return true
        }
        if unpause { loop?.unpause(self) }
        guard accepted else { return false }
        // Wait while the unsent backlog is over the limit.
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let wait = state.withLock { state -> Bool in
                guard state.outcome == nil, !state.cancelled,
                    state.upload.count - state.uploadOffset >= uploadHighWater
                else { return false }
                state.uploadWaiter = continuation
                return true
            }
            if !wait { continuation.resume() }
        }
        return state.withLock { $0.outcome == nil && !$0.cancelled }
    }

    private func endUpload(failed: Bool) {
        var unpause = false
        state.withLock { state in
            state.uploadFinished = true
            state.uploadFailed = failed
            if state.sendPaused {
                state.sendPaused = false
                unpause = true
            }
        }
        if unpause { loop?.unpause(self) }
    }

    /// Stops the transfer: waiters get CancellationError, the loop drops the handle and its
    /// connection. A no-op once the transfer has finished.
    func cancel() {
        let first = state.withLock { state -> Bool in
            guard state.outcome == nil, !state.cancelled else { return false }
            state.cancelled = true
            return true
        }
        guard first else { return }
        finish(.failure(CorralError(.cancelled, "\(request.method) \(request.path) was cancelled")))
        loop?.remove(self)
    }
}

// Plain C function pointers: no captures; the transfer comes back through the user pointer.

private let curlHeaderCallback: corral_curl_data_callback = { buffer, size, count, context in
    guard let buffer, let context else { return 0 }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(context).takeUnretainedValue()
    return transfer.receivedHeader(
        UnsafeBufferPointer(start: UnsafeRawPointer(buffer).assumingMemoryBound(to: UInt8.self), count: size * count))
}

private let curlWriteCallback: corral_curl_data_callback = { buffer, size, count, context in
    guard let buffer, let context else { return 0 }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(context).takeUnretainedValue()
    return transfer.receivedBody(
        UnsafeBufferPointer(start: UnsafeRawPointer(buffer).assumingMemoryBound(to: UInt8.self), count: size * count))
}

private let curlReadCallback: corral_curl_data_callback = { buffer, size, count, context in
    guard let buffer, let context else { return corral_CURL_READFUNC_ABORT }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(context).takeUnretainedValue()
    return transfer.fillUpload(UnsafeMutableRawBufferPointer(start: buffer, count: size * count))
}
