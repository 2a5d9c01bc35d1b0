import ControlProtocol
import CorralCore
import NIOCore

/// File operations over the control connection, performed by corral-init as the sandbox's
/// user: anywhere that user may write (tmpfs included), with the sandbox's own errors.
/// Bytes move in frames within each stream's window, so a file of any size costs a window's
/// worth of memory at most.
struct ControlFiles {
    let connection: ControlConnection

    var sandbox: SandboxID { connection.sandbox }

    /// What is at `path`; nil when nothing is.
    func stat(_ path: String, follow: Bool = true) async throws -> FileStatus? {
        let request = FileRequest(.stat, path: path, noFollow: !follow)
        do {
            let frame = try await answer(request)
            guard let status = FileStatus(decoding: frame.payload.readableBytesView) else {
                throw CorralError(.internalError, "corral-init sent a malformed stat")
            }
            return status
        } catch let error as CorralError where error.code == .notFound {
            return nil
        }
    }

    /// Streams a regular file's bytes to `consume`, once `check` accepted what it is; returns
    /// what it was.
    @discardableResult
    func read(
        _ path: String, check: (FileStatus) throws -> Void, into consume: ([UInt8]) async throws -> Void
    ) async throws -> FileStatus {
        let (stream, inbox) = try open(FileRequest(.read, path: path))
        return try await ControlRequests.withStreamCancelled(stream) {
            let ready = try await expect(.ready, from: inbox)
            guard let status = FileStatus(decoding: ready.payload.readableBytesView) else {
                throw CorralError(.internalError, "corral-init sent a malformed stat")
            }
            try check(status)
            try await drain(inbox, into: consume)
            return status
        }
    }

    /// Writes `path` from `source`, replacing what is there once all of it arrived (a new
    /// file beside it, renamed over it), with `mode`; `exclusive` refuses an existing path.
    func write<Source: AsyncSequence>(
        _ path: String, mode: UInt32, exclusive: Bool = false, from source: Source
    ) async throws where Source.Element == [UInt8] {
        let (stream, inbox) = try open(
            FileRequest(.write, path: path, mode: mode & 0o7777, exclusive: exclusive), takesInput: true)
        try await ControlRequests.withStreamCancelled(stream) {
            _ = try await expect(.ready, from: inbox)
            try await send(source, on: stream, inbox: inbox)
            _ = try await expect(.done, from: inbox)
        }
    }

    /// The entries of the directory `path`.
    func list(_ path: String) async throws -> [FileStatus] {
        let (stream, inbox) = try open(FileRequest(.list, path: path))
        return try await ControlRequests.withStreamCancelled(stream) {
            var entries: [FileStatus] = []
            try await drain(inbox) { bytes in
                guard let batch = FileStatus.decodeListing(bytes) else {
                    throw CorralError(.internalError, "corral-init sent a malformed listing")
                }
                entries += batch
            }
            return entries
        }
    }

    func makeDirectory(_ path: String, mode: UInt32, parents: Bool) async throws {
        _ = try await answer(FileRequest(.mkdir, path: path, mode: mode & 0o7777, parents: parents))
    }

    func remove(_ path: String, recursive: Bool) async throws {
        _ = try await answer(FileRequest(.remove, path: path, recursive: recursive))
    }

    func rename(_ path: String, to target: String) async throws {
        _ = try await answer(FileRequest(.rename, path: path, target: target))
    }

    func symlink(_ path: String, to target: String) async throws {
        _ = try await answer(FileRequest(.symlink, path: path, target: target))
    }

    /// A tar of `path` (its last component the top entry), a chunk at a time.
    func tarOut(_ path: String, into consume: ([UInt8]) async throws -> Void) async throws {
        let (stream, inbox) = try open(FileRequest(.tarOut, path: path))
        try await ControlRequests.withStreamCancelled(stream) {
            try await drain(inbox, into: consume)
        }
    }

    /// Unpacks the tar `source` gives into the directory `path`.
    func tarIn<Source: AsyncSequence>(_ path: String, from source: Source) async throws
    where Source.Element == [UInt8] {
        let (stream, inbox) = try open(FileRequest(.tarIn, path: path), takesInput: true)
        try await ControlRequests.withStreamCancelled(stream) {
            _ = try await expect(.ready, from: inbox)
            try await send(source, on: stream, inbox: inbox)
            _ = try await expect(.done, from: inbox)
        }
    }

    // MARK: Plumbing

    private func open(_ request: FileRequest, takesInput: Bool = false) throws -> (ControlStream, FrameInbox) {
        var request = request
        guard request.encoded() != nil else {
            throw CorralError.invalidArgument("a sandbox path cannot hold NUL bytes")
        }
        let inbox = FrameInbox()
        guard let stream = connection.openStream(sink: inbox, takesInput: takesInput) else {
            throw FrameInbox.Closed(sent: false)
        }
        inbox.attach(stream)
        request.outputWindow = stream.window
        stream.open(.file, payload: request.encoded() ?? [])
        return (stream, inbox)
    }

    /// The one answer of a request without a stream of bytes.
    private func answer(_ request: FileRequest) async throws -> ControlFrame {
        let (stream, inbox) = try open(request)
        return try await ControlRequests.withStreamCancelled(stream) {
            try await expect(.done, from: inbox)
        }
    }

    /// The next frame, which must be `kind` (data frames before it are an error); a failure
    /// becomes its error.
    private func expect(_ kind: ControlFrameKind, from inbox: FrameInbox) async throws -> ControlFrame {
        while true {
            let frame = try await inbox.next()
            if frame.kind == kind { return frame }
            if frame.kind == .failed {
                throw ControlErrors.error(ControlFailure(decoding: frame.payload.readableBytesView), sandbox: sandbox)
            }
            if frame.kind == .data {
                throw CorralError(.internalError, "corral-init sent data where it should have answered")
            }
        }
    }

    /// Hands `data` frames to `consume` until `done`.
    private func drain(_ inbox: FrameInbox, into consume: ([UInt8]) async throws -> Void) async throws {
        while true {
            let frame = try await inbox.next()
            switch frame.kind {
            case .data:
                try await consume(Array(buffer: frame.payload))
            case .done:
                return
            case .failed:
                throw ControlErrors.error(ControlFailure(decoding: frame.payload.readableBytesView), sandbox: sandbox)
            default:
                continue
            }
        }
    }

    /// Sends `source` as the stream's input, then its end. A failure corral-init reports
    /// meanwhile (a full disk) stops the sending and is thrown.
    private func send<Source: AsyncSequence>(_ source: Source, on stream: ControlStream, inbox: FrameInbox)
        async throws where Source.Element == [UInt8]
    {
        do {
            for try await chunk in source {
                try await stream.sendInput(chunk)
            }
            try stream.endInput()
        } catch let error as CorralError where error.code == .conflict || error.code == .unavailable {
            // The stream ended early: its last frame says why.
            _ = try await expect(.done, from: inbox)
            throw error
        }
    }
}

/// Bytes already in memory, as the async sequence the writers take.
struct ChunkSequence: AsyncSequence, Sendable {
    typealias Element = [UInt8]
    let chunks: [[UInt8]]

    init(_ bytes: [UInt8], chunkSize: Int = 64 << 10) {
        var chunks: [[UInt8]] = []
        var start = 0
        while start < bytes.count {
            chunks.append(Array(bytes[start..<Swift.min(start + chunkSize, bytes.count)]))
            start += chunkSize
        }
        self.chunks = chunks
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        var remaining: ArraySlice<[UInt8]>
        mutating func next() async -> [UInt8]? { remaining.popFirst() }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(remaining: chunks[...]) }
}
