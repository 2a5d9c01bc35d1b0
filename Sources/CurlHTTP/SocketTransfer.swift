import CorralCore
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One HTTP/1.1 exchange on a unix socket without libcurl, for a request whose body is in
/// memory (or absent).
///
/// Loading libcurl costs a process about 6 ms here (it maps some 30 libraries and sets up
/// OpenSSL), more than a command line's whole call to a local service. A plain request to a
/// unix socket needs none of it. The exchange runs on a thread of its own with blocking
/// reads and writes, never on Swift's cooperative pool: one connection, closed at the end
/// (`Connection: close`). The consumer API (`head`, `nextChunk`, `cancel`) is
/// `CurlTransfer`'s, and so are the errors. Backpressure: while more than `highWater` bytes
/// wait unread the thread stops reading, so the socket's buffer stops the server.
final class SocketTransfer: ResponseSource {
    private struct State {
        var fd: Int32 = -1
        var head: HTTPResponseHead?
        var chunks: [[UInt8]] = []
        var buffered = 0
        var outcome: Result<Void, CorralError>?
        var cancelled = false
        var timedOut = false
        var headWaiter: CheckedContinuation<HTTPResponseHead, any Error>?
        var bodyWaiter: CheckedContinuation<[UInt8]?, any Error>?
    }

    let request: HTTPRequest
    let endpoint: HTTPEndpoint
    private let path: String
    private let highWater: Int
    private let state = Mutex(State())
    /// Where the exchange's thread waits while the reader is behind (`deliver`).
    private let space = NSCondition()

    init(request: HTTPRequest, path: String, endpoint: HTTPEndpoint, highWater: Int) {
        self.request = request
        self.path = path
        self.endpoint = endpoint
        self.highWater = highWater
    }

    /// Starts the exchange's thread (and its deadline, when the request has one).
    func start() {
        let thread = Thread { [self] in self.run() }
        thread.name = "corral-socket-http"
        thread.start()
        if let timeout = request.timeout {
            let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { [weak self] in self?.expire() }
        }
    }

    // MARK: The exchange's thread

    private func run() {
        let outcome: Result<Void, CorralError>
        do {
            try exchange()
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        state.withLock { state in
            if state.fd >= 0 { close(state.fd) }
            state.fd = -1
        }
        finish(outcome)
    }

    private func exchange() throws(CorralError) {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw failure("cannot open a socket: \(errnoText())") }
        let kept = state.withLock { state -> Bool in
            guard !state.cancelled, state.outcome == nil else { return false }
            state.fd = fd
            return true
        }
        guard kept else {
            close(fd)
            throw interrupted()
        }
        try connect(fd)
        try send(fd, requestBytes())
        try receive(fd)
    }

    private func connect(_ fd: Int32) throws(CorralError) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else {
            throw CorralError(.invalidArgument, "cannot connect to \(endpoint): the socket path is too long")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            if isStopped { throw interrupted() }
            // The same words as CurlTransfer's, which a caller's fallback may look for.
            var info = stat()
            let why =
                lstat(path, &info) != 0
                ? "no such socket"
                : (info.st_mode & S_IFMT) == S_IFSOCK ? "nothing accepts connections on it" : "it is not a socket"
            throw CorralError(.unavailable, "cannot connect to \(endpoint): \(why)")
        }
    }

    private func requestBytes() -> [UInt8] {
        var text = "\(request.method.rawValue) \(request.path) HTTP/1.1\r\nHost: localhost\r\n"
        var body: [UInt8] = []
        if case .bytes(let bytes) = request.body { body = bytes }
        var named = Set<String>()
        for field in request.headers where !field.value.isEmpty {
            named.insert(field.name.lowercased())
            text += "\(field.name): \(field.value)\r\n"
        }
        if !named.contains("accept") { text += "Accept: */*\r\n" }
        if !body.isEmpty || request.method == .post || request.method == .put {
            text += "Content-Length: \(body.count)\r\n"
        }
        text += "Connection: close\r\n\r\n"
        return Array(text.utf8) + body
    }

    private func send(_ fd: Int32, _ bytes: [UInt8]) throws(CorralError) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { raw in
                Glibc.send(fd, raw.baseAddress, raw.count, Int32(MSG_NOSIGNAL))
            }
            if sent < 0 {
                if errno == EINTR { continue }
                throw failure("sending the request failed: \(errnoText())")
            }
            offset += sent
        }
    }

    private func receive(_ fd: Int32) throws(CorralError) {
        var pending: [UInt8] = []
        var body: BodyReader?
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw failure("reading the answer failed: \(errnoText())")
            }
            if isStopped { throw interrupted() }
            if count == 0 {
                guard let reader = body else { throw failure("the connection closed before the answer's head") }
                guard reader.endOfStream() else { throw failure("the connection closed before the answer was whole") }
                return
            }
            if var reader = body {
                let done = try reader.feed(buffer[..<count], deliver: deliver)
                body = reader
                if done { return }
                continue
            }
            pending.append(contentsOf: buffer[..<count])
            // Heads may be interim (1xx); the first final one starts the body.
            while body == nil, let end = Self.headEnd(in: pending) {
                let head = try parseHead(pending[..<end])
                pending.removeFirst(end + 4)
                if (100..<200).contains(head.status) { continue }
                var reader = try BodyReader(head: head, method: request.method)
                publish(head)
                let done = try reader.feed(pending[...], deliver: deliver)
                pending = []
                if done { return }
                body = reader
            }
            guard body != nil || pending.count <= 64 << 10 else {
                throw failure("the answer's head is larger than 64 KiB")
            }
        }
    }

    private static func headEnd(in bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 0...(bytes.count - 4)
        where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
            return index
        }
        return nil
    }

    /// Reads the status line and headers byte by byte: Foundation's `components(separatedBy:)`
    /// and `trimmingCharacters(in:)` go through NSString, which cost a command through a local
    /// service about 0.4 ms of its 7 ms of CPU.
    private func parseHead(_ bytes: ArraySlice<UInt8>) throws(CorralError) -> HTTPResponseHead {
        var lines: [ArraySlice<UInt8>] = []
        var start = bytes.startIndex
        var index = bytes.startIndex
        while index < bytes.endIndex {
            if bytes[index] == 13, index + 1 < bytes.endIndex, bytes[index + 1] == 10 {
                lines.append(bytes[start..<index])
                index += 2
                start = index
            } else {
                index += 1
            }
        }
        if start < bytes.endIndex { lines.append(bytes[start...]) }
        let first = lines.first.map { String(decoding: $0, as: UTF8.self) } ?? ""
        let statusLine = first.split(separator: " ", maxSplits: 2)
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), let status = Int(statusLine[1]) else {
            throw failure("the answer is not HTTP/1.1: \(first)")
        }
        var headers = HTTPHeaders()
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
            headers.add(
                String(decoding: line[..<colon], as: UTF8.self),
                String(decoding: Self.trimmed(line[(colon + 1)...]), as: UTF8.self))
        }
        return HTTPResponseHead(status: status, headers: headers)
    }

    /// `bytes` without the spaces and tabs at either end.
    static func trimmed(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        let blank: (UInt8) -> Bool = { $0 == 32 || $0 == 9 }
        guard let first = bytes.firstIndex(where: { !blank($0) }), let last = bytes.lastIndex(where: { !blank($0) })
        else { return [] }
        return bytes[first...last]
    }

    private func publish(_ head: HTTPResponseHead) {
        let waiter = state.withLock { state in
            state.head = head
            defer { state.headWaiter = nil }
            return state.headWaiter
        }
        waiter?.resume(returning: head)
    }

    /// Hands `chunk` to the reader (or its buffer), then waits while the buffer is over the
    /// high-water mark.
    private func deliver(_ chunk: [UInt8]) {
        guard !chunk.isEmpty else { return }
        let waiter = state.withLock { state -> CheckedContinuation<[UInt8]?, any Error>? in
            if let waiter = state.bodyWaiter {
                state.bodyWaiter = nil
                return waiter
            }
            state.chunks.append(chunk)
            state.buffered += chunk.count
            return nil
        }
        if let waiter {
            waiter.resume(returning: chunk)
            return
        }
        // The reader's drain, a cancel and the deadline signal `space` (under its lock, after
        // changing the state), so this check and wait miss none of them.
        space.lock()
        while state.withLock({ $0.buffered > highWater && !$0.cancelled && !$0.timedOut }) { space.wait() }
        space.unlock()
    }

    /// Wakes the exchange's thread if it waits for the reader (`deliver`).
    private func signalSpace() {
        space.lock()
        space.signal()
        space.unlock()
    }

    private var isStopped: Bool { state.withLock { $0.cancelled || $0.timedOut } }

    /// The error for an exchange that `cancel` or the deadline cut short.
    private func interrupted() -> CorralError {
        state.withLock { $0.timedOut }
            ? CorralError(.timeout, "\(request.method) \(request.path) on \(endpoint) timed out")
            : CorralError(.cancelled, "\(request.method) \(request.path) was cancelled")
    }

    private func failure(_ detail: String) -> CorralError {
        isStopped
            ? interrupted() : CorralError(.io, "\(request.method) \(request.path) on \(endpoint) failed: \(detail)")
    }

    private func errnoText() -> String { String(cString: strerror(errno)) }

    private func finish(_ outcome: Result<Void, CorralError>) {
        let (headWaiter, bodyWaiter, final) = state.withLock { state in
            let final = state.outcome ?? outcome
            state.outcome = final
            defer {
                state.headWaiter = nil
                state.bodyWaiter = nil
            }
            return (state.headWaiter, state.bodyWaiter, final)
        }
        switch final {
        case .success:
            headWaiter?.resume(throwing: failure("the connection closed before the answer's head"))
            bodyWaiter?.resume(returning: nil)
        case .failure(let error):
            headWaiter?.resume(throwing: error)
            bodyWaiter?.resume(throwing: error)
        }
    }

    /// Ends the exchange at its deadline: the thread's read returns, and waiters get `.timeout`.
    private func expire() {
        let live = state.withLock { state -> Bool in
            guard state.outcome == nil, !state.cancelled else { return false }
            state.timedOut = true
            if state.fd >= 0 { shutdown(state.fd, Int32(SHUT_RDWR)) }
            return true
        }
        signalSpace()
        if live { finish(.failure(interrupted())) }
    }

    // MARK: Consumers (any task)

    func head() async throws -> HTTPResponseHead {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { state -> Result<HTTPResponseHead, any Error>? in
                if let head = state.head { return .success(head) }
                if case .failure(let error) = state.outcome { return .failure(error) }
                if state.outcome != nil {
                    return .failure(CorralError(.io, "\(request.method) \(request.path) on \(endpoint) had no answer"))
                }
                state.headWaiter = continuation
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    /// The next piece of the body, all that is buffered joined; nil at the end.
    func nextChunk() async throws -> [UInt8]? {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { state -> Result<[UInt8]?, any Error>? in
                if !state.chunks.isEmpty {
                    var joined = state.chunks[0]
                    for chunk in state.chunks.dropFirst() { joined.append(contentsOf: chunk) }
                    state.chunks.removeAll(keepingCapacity: true)
                    state.buffered = 0
                    return .success(joined)
                }
                switch state.outcome {
                case .success: return .success(nil)
                case .failure(let error): return .failure(error)
                case nil:
                    state.bodyWaiter = continuation
                    return nil
                }
            }
            signalSpace()
            if let ready { continuation.resume(with: ready) }
        }
    }

    /// Stops the exchange: its thread's blocking call returns, waiters get `.cancelled`. A
    /// no-op once the exchange has finished.
    func cancel() {
        let live = state.withLock { state -> Bool in
            guard state.outcome == nil, !state.cancelled else { return false }
            state.cancelled = true
            if state.fd >= 0 { shutdown(state.fd, Int32(SHUT_RDWR)) }
            return true
        }
        signalSpace()
        if live { finish(.failure(interrupted())) }
    }
}

/// How an answer's body is framed, and the chunked decoder's state.
private struct BodyReader {
    private enum Framing {
        case none
        case length(remaining: Int)
        case chunked
        case untilClose
    }

    private enum ChunkState {
        case size(line: [UInt8])
        case data(remaining: Int)
        case dataEnd(seen: Int)
        case trailer(line: [UInt8])
        case done
    }

    private var framing: Framing
    private var chunk = ChunkState.size(line: [])

    init(head: HTTPResponseHead, method: HTTPMethod) throws(CorralError) {
        if method == .head || head.status == 204 || head.status == 304 {
            framing = .none
        } else if head.headers["Transfer-Encoding"]?.lowercased().contains("chunked") == true {
            framing = .chunked
        } else if let text = head.headers["Content-Length"] {
            guard let length = Int(String(decoding: SocketTransfer.trimmed(Array(text.utf8)[...]), as: UTF8.self)),
                length >= 0
            else {
                throw CorralError(.io, "the answer's Content-Length is not a number: \(text)")
            }
            framing = .length(remaining: length)
        } else {
            framing = .untilClose
        }
    }

    /// Whether the body may end where the connection did.
    func endOfStream() -> Bool {
        switch framing {
        case .none, .untilClose: return true
        case .length(let remaining): return remaining == 0
        case .chunked:
            if case .done = chunk { return true }
            return false
        }
    }

    /// Decodes `bytes`, handing body bytes to `deliver`; true when the body is whole.
    mutating func feed(_ bytes: ArraySlice<UInt8>, deliver: ([UInt8]) -> Void) throws(CorralError) -> Bool {
        switch framing {
        case .none:
            return true
        case .untilClose:
            deliver(Array(bytes))
            return false
        case .length(let remaining):
            let take = min(remaining, bytes.count)
            deliver(Array(bytes.prefix(take)))
            framing = .length(remaining: remaining - take)
            return remaining - take == 0
        case .chunked:
            return try feedChunked(bytes, deliver: deliver)
        }
    }

    private mutating func feedChunked(_ bytes: ArraySlice<UInt8>, deliver: ([UInt8]) -> Void) throws(CorralError)
        -> Bool
    {
        var index = bytes.startIndex
        while index < bytes.endIndex {
            switch chunk {
            case .size(var line):
                let byte = bytes[index]
                index += 1
                if byte == 10 {
                    let text = String(decoding: line, as: UTF8.self)
                    let digits = String(
                        decoding: SocketTransfer.trimmed(line.prefix { $0 != UInt8(ascii: ";") }[...]), as: UTF8.self)
                    guard let size = Int(digits, radix: 16), size >= 0 else {
                        throw CorralError(.io, "the answer's chunk size is not hexadecimal: \(text)")
                    }
                    chunk = size == 0 ? .trailer(line: []) : .data(remaining: size)
                } else if byte != 13 {
                    guard line.count < 1024 else { throw CorralError(.io, "the answer's chunk size line is too long") }
                    line.append(byte)
                    chunk = .size(line: line)
                }
            case .data(let remaining):
                let take = min(remaining, bytes.endIndex - index)
                deliver(Array(bytes[index..<(index + take)]))
                index += take
                chunk = remaining == take ? .dataEnd(seen: 0) : .data(remaining: remaining - take)
            case .dataEnd(let seen):
                index += 1
                chunk = seen == 1 ? .size(line: []) : .dataEnd(seen: seen + 1)
            case .trailer(var line):
                let byte = bytes[index]
                index += 1
                if byte == 10 {
                    if line.isEmpty {
                        chunk = .done
                        return true
                    }
                    line = []
                } else if byte != 13 {
                    line.append(byte)
                }
                chunk = .trailer(line: line)
            case .done:
                return true
            }
        }
        if case .done = chunk { return true }
        return false
    }
}
