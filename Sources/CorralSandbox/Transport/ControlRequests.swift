import ControlProtocol
import CorralCore
import DockerEngine
import Foundation
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Turns a command stream's frames into its inbox's events, on the connection's event loop.
final class ControlCommandSink: ControlStreamSink {
    let inbox: CommandInbox
    let sandbox: SandboxID
    let command: CommandID
    private let clock = ContinuousClock()
    private let startedAt: ContinuousClock.Instant
    /// For an attach: when corral-init says the command started (its duration is measured
    /// from there, not from the attach).
    private let startedMilliseconds = Atomic<Int64>(-1)

    init(inbox: CommandInbox, sandbox: SandboxID, command: CommandID) {
        self.inbox = inbox
        self.sandbox = sandbox
        self.command = command
        self.startedAt = clock.now
    }

    func receive(_ frame: ControlFrame, on stream: ControlStream) -> Int {
        let payload = frame.payload.readableBytesView
        switch frame.kind {
        case .started:
            inbox.started(.started(pid: StartedReport(decoding: payload)?.pid ?? 0))
        case .ready:
            guard let report = AttachedReport(decoding: payload) else {
                inbox.finish(.failed(CorralError(.internalError, "corral-init sent a malformed attach report")))
                return 0
            }
            startedMilliseconds.store(report.command.startedMilliseconds, ordering: .relaxed)
            inbox.started(.attached(report))
        case .stdout, .stderr:
            return inbox.push(frame.kind == .stdout ? .stdout : .stderr, Array(buffer: frame.payload))
        case .exit:
            guard let report = ExitReport(decoding: payload) else {
                inbox.finish(.failed(CorralError(.internalError, "corral-init sent a malformed exit report")))
                return 0
            }
            let since = startedMilliseconds.load(ordering: .relaxed)
            let duration =
                since >= 0 ? Double(report.endedMilliseconds - since) : (clock.now - startedAt).milliseconds
            inbox.finish(
                .exited(
                    CommandStatus(
                        exitCode: report.status, timedOut: report.timedOut,
                        oomKilled: report.outOfMemory && report.status != 0 && !report.timedOut,
                        durationMilliseconds: duration)))
        case .failed:
            inbox.finish(.failed(ControlErrors.error(ControlFailure(decoding: payload), sandbox: sandbox)))
        default:
            break
        }
        return 0
    }

    func connectionClosed(sent: Bool) {
        inbox.finish(.lost(sent: sent))
    }
}

/// A command's stdin, terminal and signals over its stream.
struct ControlCommandControls: CommandControls {
    let stream: ControlStream
    let command: CommandID
    let explain: @Sendable (CommandID, Bool) async -> any Error

    func write(_ bytes: [UInt8]) async throws {
        do {
            try await stream.sendInput(bytes)
        } catch let error as CorralError where error.code == .unavailable {
            throw await explain(command, false)
        }
    }

    func closeStdin() async throws { try stream.endInput() }

    func resize(_ size: TerminalSize) async throws {
        guard let window = WindowSize(rows: size.rows, columns: size.columns) else {
            throw CorralError.invalidArgument("a terminal of \(size.rows) by \(size.columns) is out of range")
        }
        stream.connection.send(.resize, id: stream.id, payload: ByteBuffer(bytes: window.encoded()))
    }

    func signal(_ signal: CommandSignal) async throws {
        try await ControlRequests.signal(command, signal, on: stream.connection)
    }

    func release() { stream.cancel() }

    func lossError(command: CommandID, detached: Bool) async -> any Error { await explain(command, detached) }
}

/// A stream's frames for a caller that reads them one by one (listings, signals, file
/// operations), credited back as it takes them.
final class FrameInbox: ControlStreamSink {
    private struct State {
        var frames: [ControlFrame] = []
        var head = 0
        var closed: Bool?
        var waiter: CheckedContinuation<ControlFrame?, any Error>?
    }

    private let state = Mutex(State())
    private let stream = Mutex<ControlStream?>(nil)

    func attach(_ stream: ControlStream) { self.stream.withLock { $0 = stream } }

    func receive(_ frame: ControlFrame, on stream: ControlStream) -> Int {
        state.withLock { state -> CheckedContinuation<ControlFrame?, any Error>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.frames.append(frame)
            return nil
        }?.resume(returning: frame)
        return 0
    }

    func connectionClosed(sent: Bool) {
        state.withLock { state in
            state.closed = sent
            defer { state.waiter = nil }
            return state.waiter
        }?.resume(throwing: Closed(sent: sent))
    }

    /// The connection closed before the exchange ended.
    struct Closed: Error {
        var sent: Bool
    }

    /// The next frame; throws `Closed` once the connection dropped.
    func next() async throws -> ControlFrame {
        let frame = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<ControlFrame?, any Error>) in
                enum Now {
                    case frame(ControlFrame)
                    case closed(Bool)
                    case cancelled
                    case wait
                }
                let now = state.withLock { state -> Now in
                    if state.head < state.frames.count {
                        let frame = state.frames[state.head]
                        state.head += 1
                        if state.head == state.frames.count {
                            state.frames.removeAll(keepingCapacity: true)
                            state.head = 0
                        } else if state.head > 64 && state.head * 2 > state.frames.count {
                            state.frames.removeFirst(state.head)
                            state.head = 0
                        }
                        return .frame(frame)
                    }
                    if let sent = state.closed { return .closed(sent) }
                    if Task.isCancelled { return .cancelled }
                    state.waiter = waiter
                    return .wait
                }
                switch now {
                case .frame(let frame): waiter.resume(returning: frame)
                case .closed(let sent): waiter.resume(throwing: Closed(sent: sent))
                case .cancelled: waiter.resume(throwing: CancellationError())
                case .wait: break
                }
            }
        } onCancel: {
            state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }?.resume(throwing: CancellationError())
        }
        guard let frame else { throw Closed(sent: true) }
        if frame.kind.countsAgainstWindow {
            stream.withLock { $0 }?.consumed(frame.payload.readableBytes)
        }
        return frame
    }
}

/// Requests other than commands: listings and signals.
enum ControlRequests {
    /// Opens a stream for a request and its answers.
    static func open(
        _ kind: ControlFrameKind, _ payload: [UInt8], on connection: ControlConnection, takesInput: Bool = false
    ) throws -> (ControlStream, FrameInbox) {
        let inbox = FrameInbox()
        guard let stream = connection.openStream(sink: inbox, takesInput: takesInput) else {
            throw FrameInbox.Closed(sent: false)
        }
        inbox.attach(stream)
        stream.open(kind, payload: payload)
        return (stream, inbox)
    }

    static func commands(on connection: ControlConnection) async throws -> [CommandRecord] {
        let (stream, inbox) = try open(.commands, [], on: connection)
        return try await withStreamCancelled(stream) {
            var records: [CommandRecord] = []
            while true {
                let frame = try await inbox.next()
                switch frame.kind {
                case .data:
                    guard let record = CommandRecord(decoding: frame.payload.readableBytesView) else {
                        throw CorralError(.internalError, "corral-init sent a malformed command listing")
                    }
                    records.append(record)
                case .done:
                    return records
                case .failed:
                    throw ControlErrors.error(
                        ControlFailure(decoding: frame.payload.readableBytesView), sandbox: connection.sandbox)
                default:
                    continue
                }
            }
        }
    }

    static func signal(_ command: CommandID, _ signal: CommandSignal, on connection: ControlConnection) async throws {
        let request = SignalRequest(commandID: command.rawValue, signal: signal.number)
        let (stream, inbox) = try open(.signal, request.encoded(), on: connection)
        try await withStreamCancelled(stream) {
            while true {
                let frame = try await inbox.next()
                switch frame.kind {
                case .done:
                    return
                case .failed:
                    throw ControlErrors.error(
                        ControlFailure(decoding: frame.payload.readableBytesView), sandbox: connection.sandbox)
                default:
                    continue
                }
            }
        }
    }

    /// Runs `body`; on an error or cancellation the stream is cancelled (corral-init
    /// abandons what it was doing for it).
    static func withStreamCancelled<T>(_ stream: ControlStream, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            stream.cancel()
            throw error
        }
    }
}

/// corral-init's failures as `CorralError`s.
enum ControlErrors {
    static func error(_ failure: ControlFailure, sandbox: SandboxID) -> CorralError {
        switch failure.code {
        case ControlFailure.Code.unknownCommand:
            return CorralError(
                .notFound, "sandbox \(sandbox): \(failure.message)", hint: "list the sandbox's commands to see its ids")
        case ControlFailure.Code.finished:
            return CorralError(
                .conflict, "sandbox \(sandbox): \(failure.message)",
                hint: "only a running command can be attached to or signalled; its status is in the sandbox's commands")
        case ControlFailure.Code.exists:
            return CorralError(.alreadyExists, "sandbox \(sandbox): \(failure.message)")
        case ControlFailure.Code.limit:
            return CorralError(.resourceExhausted, "sandbox \(sandbox): \(failure.message)")
        case ControlFailure.Code.badRequest:
            return CorralError(.invalidArgument, "sandbox \(sandbox): \(failure.message)")
        default:
            guard failure.errno != 0 else {
                return CorralError(.unavailable, "sandbox \(sandbox): \(failure.message)")
            }
            return CorralError(
                code(forErrno: failure.errno),
                "sandbox \(sandbox): \(failure.message): \(phrase(failure.errno)) (\(name(failure.errno)))",
                hint: hint(failure.errno))
        }
    }

    static func code(forErrno error: Int32) -> CorralError.Code {
        switch error {
        case ENOENT, ENOTDIR: .notFound
        case EACCES, EPERM, EROFS: .permissionDenied
        case EEXIST: .alreadyExists
        case ENOSPC, EDQUOT, EFBIG, EMFILE, ENFILE, ENOMEM: .resourceExhausted
        case EISDIR, EINVAL, ENAMETOOLONG, ELOOP, EXDEV: .invalidArgument
        case ENOTEMPTY, EBUSY, ETXTBSY: .conflict
        default: .io
        }
    }

    static func hint(_ error: Int32) -> String? {
        switch error {
        case EROFS: "the sandbox's root is read-only: write under /workspace, /tmp or the home directory"
        case ENOSPC, EDQUOT: "the sandbox's disk (or tmpfs) is full: free some space, or give it a larger disk"
        case EACCES, EPERM: "the sandbox's user may not do that there"
        default: nil
        }
    }

    /// strerror's text, starting in lower case so that it reads inside a sentence.
    static func phrase(_ error: Int32) -> String {
        guard let text = strerror(error) else { return "error \(error)" }
        let phrase = String(cString: text)
        return phrase.prefix(1).lowercased() + phrase.dropFirst()
    }

    static let names: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", EINTR: "EINTR", EIO: "EIO", ENXIO: "ENXIO", E2BIG: "E2BIG",
        ENOEXEC: "ENOEXEC", EBADF: "EBADF", ECHILD: "ECHILD", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM", EACCES: "EACCES",
        EFAULT: "EFAULT", EBUSY: "EBUSY", EEXIST: "EEXIST", EXDEV: "EXDEV", ENODEV: "ENODEV", ENOTDIR: "ENOTDIR",
        EISDIR: "EISDIR", EINVAL: "EINVAL", ENFILE: "ENFILE", EMFILE: "EMFILE", ETXTBSY: "ETXTBSY", EFBIG: "EFBIG",
        ENOSPC: "ENOSPC", ESPIPE: "ESPIPE", EROFS: "EROFS", EMLINK: "EMLINK", EPIPE: "EPIPE",
        ENAMETOOLONG: "ENAMETOOLONG", ENOTEMPTY: "ENOTEMPTY", ELOOP: "ELOOP", EDQUOT: "EDQUOT",
    ]

    static func name(_ error: Int32) -> String { names[error] ?? "errno \(error)" }
}
