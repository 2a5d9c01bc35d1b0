import CorralCore
import CorralSandbox
import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The command line's own terminal while `corral exec -t` runs: raw mode on stdin (every key
/// goes to the sandbox's terminal, ^C included), restored on every way out (a normal end, an
/// error, SIGTERM, SIGHUP, SIGQUIT), and its size at the start and on every SIGWINCH.
final class LocalTerminal: @unchecked Sendable {
    // @unchecked: `saved` is written once before any signal source starts; the sources run on
    // one serial queue.
    private let fd: Int32
    private var saved = termios()
    private var sources: [any DispatchSourceSignal] = []
    private let queue = DispatchQueue(label: "corral.terminal")
    private let restored = NSLock()
    private var isRestored = false

    /// Whether stdin and stdout are both terminals: a PTY in the sandbox only makes sense then.
    static var isInteractive: Bool { isatty(STDIN_FILENO) == 1 && isatty(STDOUT_FILENO) == 1 }

    /// The size of the terminal on `fd`, if it is one.
    static func size(of fd: Int32 = STDOUT_FILENO) -> TerminalSize? {
        var size = winsize()
        guard ioctl(fd, UInt(TIOCGWINSZ), &size) == 0, size.ws_row > 0, size.ws_col > 0 else { return nil }
        return TerminalSize(rows: Int(size.ws_row), columns: Int(size.ws_col))
    }

    /// Puts stdin's terminal in raw mode until `restore()`.
    init(fd: Int32 = STDIN_FILENO) throws {
        self.fd = fd
        guard tcgetattr(fd, &saved) == 0 else {
            throw CorralError(.io, "cannot read the terminal's settings: \(String(cString: strerror(errno)))")
        }
        var raw = saved
        cfmakeraw(&raw)
        guard tcsetattr(fd, TCSANOW, &raw) == 0 else {
            throw CorralError(.io, "cannot put the terminal in raw mode: \(String(cString: strerror(errno)))")
        }
        for signal in [SIGTERM, SIGHUP, SIGQUIT, SIGINT] {
            Glibc.signal(signal, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signal, queue: queue)
            source.setEventHandler { [self] in
                restore()
                Glibc.signal(signal, SIG_DFL)
                Glibc.raise(signal)
            }
            source.resume()
            sources.append(source)
        }
    }

    deinit { restore() }

    /// Puts the terminal back as it was. Safe to call more than once.
    func restore() {
        restored.lock()
        defer { restored.unlock() }
        guard !isRestored else { return }
        isRestored = true
        var settings = saved
        _ = tcsetattr(fd, TCSAFLUSH, &settings)
    }

    /// The terminal's size on every SIGWINCH, for as long as this terminal is held.
    func resizes() -> AsyncStream<TerminalSize> {
        let (stream, continuation) = AsyncStream.makeStream(of: TerminalSize.self, bufferingPolicy: .bufferingNewest(1))
        Glibc.signal(SIGWINCH, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGWINCH, queue: queue)
        source.setEventHandler {
            if let size = LocalTerminal.size() { continuation.yield(size) }
        }
        source.resume()
        sources.append(source)
        return stream
    }
}

/// Our stdin as a stream of chunks, read on a thread of its own, with backpressure: at most a
/// mebibyte waits unsent. It ends at EOF, and for its reader when the reading task is
/// cancelled (the command ended while stdin stays open, as a terminal's does).
func standardInputStream() -> AsyncThrowingStream<[UInt8], any Error> {
    inputStream(reading: STDIN_FILENO, name: "stdin")
}

/// What `descriptor` gives until its end, read on a thread of its own; `name` is for errors.
/// `onEnd` runs on that thread once it no longer reads `descriptor`.
func inputStream(reading descriptor: Int32, name: String, onEnd: (@Sendable () -> Void)? = nil)
    -> AsyncThrowingStream<[UInt8], any Error>
{
    let channel = ByteChannel()
    Thread {
        defer { onEnd?() }
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                if count < 0 {
                    channel.finish(
                        throwing: CorralError(.io, "reading \(name) failed: \(String(cString: strerror(errno)))"))
                } else {
                    channel.finish()
                }
                return
            }
            do {
                try channel.blockingSend(Array(buffer[..<count]))
            } catch {
                return
            }
        }
    }.start()
    return AsyncThrowingStream {
        try await withTaskCancellationHandler {
            try await channel.receive()
        } onCancel: {
            channel.cancel()
        }
    }
}
