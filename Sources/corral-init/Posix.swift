import CCorralInit
import Glibc

// Small, allocation-light helpers over Glibc. corral-init must not import Foundation: it is
// linked fully static and bind-mounted into every sandbox, so its size and its independence
// from the image's own libraries matter more than convenience.

/// Writes one line to stderr, prefixed so that it stands out among a sandbox's own output.
func logLine(_ message: String) {
    let bytes = Array("corral-init: \(message)\n".utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeBytes { raw in
            write(STDERR_FILENO, raw.baseAddress.map { $0 + offset }, raw.count - offset)
        }
        if written < 0 {
            if errno == EINTR { continue }
            return
        }
        offset += written
    }
}

/// The text of an errno value.
func describeErrno(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    return String(cString: text)
}

/// An environment variable, or nil when it is unset or empty.
func environmentValue(_ name: String) -> String? {
    guard let raw = getenv(name) else { return nil }
    let value = String(cString: raw)
    return value.isEmpty ? nil : value
}

/// Parses a non-negative, finite number of seconds ("2", "0.5").
func parseSeconds(_ text: String) -> Double? {
    guard let value = Double(text), value.isFinite, value >= 0 else { return nil }
    return value
}

/// A point on the monotonic clock, in nanoseconds. Wall-clock jumps must not shorten or
/// stretch a timeout.
struct MonotonicInstant: Comparable, Sendable {
    var nanoseconds: Int64

    static func now() -> MonotonicInstant {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return MonotonicInstant(nanoseconds: Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))
    }

    func adding(seconds: Double) -> MonotonicInstant {
        // Clamp: a timeout of a century is as good as forever and must not overflow.
        let delta = min(seconds, 3_000_000_000) * 1_000_000_000
        return MonotonicInstant(nanoseconds: nanoseconds + Int64(delta))
    }

    /// The time left until `self`, as a timespec, never negative.
    func remaining(from now: MonotonicInstant) -> timespec {
        let left = max(0, nanoseconds - now.nanoseconds)
        return timespec(tv_sec: Int(left / 1_000_000_000), tv_nsec: Int(left % 1_000_000_000))
    }

    static func < (lhs: MonotonicInstant, rhs: MonotonicInstant) -> Bool {
        lhs.nanoseconds < rhs.nanoseconds
    }
}

/// A set of signal numbers as the kernel sees it.
struct SignalSet {
    var raw = sigset_t()

    init(_ signals: [Int32]) {
        sigemptyset(&raw)
        for signal in signals { sigaddset(&raw, signal) }
    }

    /// Blocks these signals in the calling thread (and in every thread it creates later),
    /// so that they queue for `wait` instead of interrupting anything. Returns the mask
    /// that was in force before.
    func block() -> sigset_t {
        var set = raw
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &set, &previous)
        return previous
    }

    /// Waits for one of these signals (they must be blocked), up to `deadline` when one is
    /// given. Returns nil on timeout.
    func wait(until deadline: MonotonicInstant?) -> Int32? {
        var set = raw
        var info = siginfo_t()
        while true {
            let signal: Int32
            if let deadline {
                var timeout = deadline.remaining(from: .now())
                signal = sigtimedwait(&set, &info, &timeout)
            } else {
                signal = sigwaitinfo(&set, &info)
            }
            if signal > 0 { return signal }
            switch errno {
            case EINTR: continue
            case EAGAIN: return nil
            default:
                // Only EINVAL is documented, and a fixed set cannot cause it.
                logLine("waiting for signals failed: \(describeErrno(errno))")
                return nil
            }
        }
    }
}

/// Decoded `waitpid` status. Glibc's W* macros do not import into Swift.
struct WaitStatus {
    var raw: Int32

    var exitCode: Int32? { raw & 0x7f == 0 ? (raw >> 8) & 0xff : nil }
    var terminatingSignal: Int32? {
        let signal = raw & 0x7f
        return signal != 0 && signal != 0x7f ? signal : nil
    }

    /// The status a shell would report: the exit code, or 128 plus the signal.
    var shellStatus: Int32 {
        if let exitCode { return exitCode }
        if let terminatingSignal { return 128 + terminatingSignal }
        return 1
    }
}

/// Runs `body` on a new detached POSIX thread. Returns false when the thread could not be
/// created (the body then never runs).
func spawnDetachedThread(stackSize: Int = 256 * 1024, _ body: @escaping @Sendable () -> Void) -> Bool {
    final class Body {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }
    let context = Unmanaged.passRetained(Body(body)).toOpaque()
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    defer { pthread_attr_destroy(&attributes) }
    pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
    pthread_attr_setstacksize(&attributes, stackSize)
    var thread = pthread_t()
    let result = pthread_create(
        &thread, &attributes,
        { raw in
            guard let raw else { return nil }
            Unmanaged<Body>.fromOpaque(raw).takeRetainedValue().run()
            return nil
        }, context)
    if result != 0 {
        Unmanaged<Body>.fromOpaque(context).release()
        return false
    }
    return true
}

/// The process environment, for posix_spawn. `environ` is a C global that Swift 6 counts as
/// shared mutable state; this program reads it from one thread, before any other exists.
func currentEnvironment() -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? {
    environ
}

/// Connects a stream socket (close-on-exec, and non-blocking when asked) to the unix socket
/// at `path`; retries on EINTR. Returns the descriptor, or the errno of the failure.
func connectUnixSocket(_ path: String, nonBlocking: Bool = false) -> Result<Int32, Errno> {
    var type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
    if nonBlocking { type |= Int32(SOCK_NONBLOCK.rawValue) }
    let fd = socket(AF_UNIX, type, 0)
    guard fd >= 0 else { return .failure(Errno(code: errno)) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        // Lengths are checked at startup; the prefix keeps this safe regardless.
        for (index, byte) in bytes.prefix(raw.count - 1).enumerated() { raw[index] = byte }
    }
    while true {
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if result == 0 { return .success(fd) }
        if errno == EINTR { continue }
        // A unix socket connects at once or not at all; EAGAIN means its backlog is full.
        let failure = Errno(code: errno)
        close(fd)
        return .failure(failure)
    }
}

/// An errno value as an error.
struct Errno: Error {
    var code: Int32
    var description: String { describeErrno(code) }
}

/// Makes this process undumpable (PR_SET_DUMPABLE 0): the kernel then lets no other process
/// of the same user, and none without CAP_SYS_PTRACE, read its memory, environment or
/// descriptors through /proc, or trace it. (gVisor keeps memory and tracing closed but still
/// shows the environment and the descriptor list, which hold no secret.) Processes it starts
/// are dumpable again once they exec. False when the kernel did not take it.
func makeUndumpable() -> Bool {
    guard corral_set_dumpable(0) == 0 else { return false }
    return corral_get_dumpable() == 0
}

/// Reads a file of at most `limit` bytes whole, without following a symbolic link.
func readSmallFile(_ path: String, limit: Int) -> Result<[UInt8], InitError> {
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
    guard fd >= 0 else { return .failure(InitError("cannot open \(path): \(describeErrno(errno))")) }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: limit + 1)
    var count = 0
    while count < buffer.count {
        let got = buffer.withUnsafeMutableBytes { raw -> Int in
            guard let base = raw.baseAddress else { return -1 }
            return read(fd, base + count, raw.count - count)
        }
        if got > 0 {
            count += got
        } else if got == 0 {
            break
        } else if errno != EINTR {
            return .failure(InitError("cannot read \(path): \(describeErrno(errno))"))
        }
    }
    guard count <= limit else { return .failure(InitError("\(path) is larger than \(limit) bytes")) }
    return .success(Array(buffer[0..<count]))
}

/// Writes all of `bytes`; false on an error. To a socket, without SIGPIPE.
func writeFully(_ fd: Int32, _ bytes: [UInt8], socket: Bool = false) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeBytes { raw -> Int in
            guard let base = raw.baseAddress else { return -1 }
            return socket
                ? send(fd, base + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                : write(fd, base + offset, raw.count - offset)
        }
        if written > 0 {
            offset += written
        } else if written < 0 && errno == EINTR {
            continue
        } else {
            return false
        }
    }
    return true
}
