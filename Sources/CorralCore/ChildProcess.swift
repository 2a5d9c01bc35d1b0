import CCorralProcess
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A program started on the host, with posix_spawn, instead of Foundation's Process.
///
/// Why: Process.run on Linux reads /proc/self/fd in the parent to learn what to close, and
/// copies each dirent's whole 256-byte name: when a record ends a page, that over-read
/// crashes the process (swift-corelibs-foundation PR 5472; it took a CI run's test process
/// down here, in mkfs's start). `corral_spawn` closes descriptors in the child
/// (closefrom), so nothing is read, and it also starts the child with no signal blocked and
/// the usual signals at their defaults, whatever the parent blocks or ignores.
///
/// The pid stays valid until the process is reaped, and reaping happens under the same lock
/// as `signal`, so a signal never reaches a stranger that reused the pid.
public final class ChildProcess: Sendable {
    /// How a process ended.
    public struct Termination: Sendable, Equatable, CustomStringConvertible {
        /// The exit code, or nil when a signal ended it.
        public var code: Int32?
        /// The signal that ended it, if one did.
        public var signal: Int32?

        /// The exit code, or the signal's number (Process's terminationStatus).
        public var status: Int32 { code ?? signal ?? -1 }
        public var succeeded: Bool { code == 0 }
        public var description: String { code.map { "status \($0)" } ?? "signal \(signal ?? -1)" }

        public init(code: Int32?, signal: Int32?) {
            self.code = code
            self.signal = signal
        }

        init(waitStatus: Int32) {
            if waitStatus & 0x7f == 0 {
                code = (waitStatus >> 8) & 0xff
            } else {
                signal = waitStatus & 0x7f
            }
        }
    }

    public let pid: pid_t
    private let ended = Mutex<Termination?>(nil)

    private init(pid: pid_t) { self.pid = pid }

    /// Starts `executable` (a path: nothing searches PATH) with `arguments` and
    /// `environment` (nil: this process's). `stdin`, `stdout` and `stderr` are descriptors
    /// the child gets as 0, 1 and 2 (nil: /dev/null); the caller keeps and closes its own.
    public static func spawn(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: Int32? = nil,
        stdout: Int32? = nil, stderr: Int32? = nil, directory: String? = nil
    ) throws -> ChildProcess {
        var null: Int32 = -1
        if stdin == nil || stdout == nil || stderr == nil {
            null = open("/dev/null", O_RDWR | O_CLOEXEC)
            guard null >= 0 else {
                throw CorralError(.io, "cannot open /dev/null: \(String(cString: strerror(errno)))")
            }
        }
        defer { if null >= 0 { close(null) } }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp ?? [] { free(pointer) }
        }
        var pid: pid_t = 0
        let status = argv.withUnsafeBufferPointer { arguments in
            let spawn = { (environment: UnsafePointer<UnsafeMutablePointer<CChar>?>?) in
                corral_spawn(
                    executable, arguments.baseAddress, environment, stdin ?? null, stdout ?? null, stderr ?? null,
                    directory, &pid)
            }
            guard let envp else { return spawn(environ) }
            return envp.withUnsafeBufferPointer { spawn($0.baseAddress) }
        }
        guard status == 0 else {
            throw CorralError(.unavailable, "cannot run \(executable): \(String(cString: strerror(status)))")
        }
        return ChildProcess(pid: pid)
    }

    /// Whether it has not ended yet.
    public var isRunning: Bool {
        ended.withLock { ended in
            guard ended == nil else { return false }
            var info = siginfo_t()
            let result = waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT)
            return result == 0 && info._sifields._sigchld.si_pid == 0
        }
    }

    /// Sends `signal`, unless the process has been reaped.
    public func signal(_ signal: Int32) {
        ended.withLock { ended in
            if ended == nil { kill(pid, signal) }
        }
    }

    /// Waits for the end (blocking) and reaps. Any number of threads may wait.
    @discardableResult
    public func wait() -> Termination {
        if let termination = ended.withLock({ $0 }) { return termination }
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
        return ended.withLock { ended in
            if let ended { return ended }
            var status: Int32 = 0
            let reaped = waitpid(pid, &status, WNOHANG)
            // ECHILD: someone else reaped it; nothing better to say than that it ended.
            let termination = reaped == pid ? Termination(waitStatus: status) : Termination(waitStatus: 0x7f)
            ended = termination
            return termination
        }
    }

    /// Waits for the end on a thread of its own.
    public func terminated() async throws -> Termination {
        try await runOnThread(name: "corral-wait") { self.wait() }
    }

    /// What `run` collected.
    public struct Output: Sendable {
        public var termination: Termination
        public var stdout: Data
        public var stderr: Data

        public var status: Int32 { termination.status }
        /// The first line of stderr, or how it ended: for an error message.
        public var reason: String {
            String(decoding: stderr.prefix(400), as: UTF8.self).split(separator: "\n").first.map(String.init)
                ?? termination.description
        }
    }

    /// Runs a program to its end, feeding it `stdin` (nil: /dev/null) and collecting up to
    /// `limit` bytes of each of stdout and stderr (the rest is read and dropped, so that a
    /// chatty child never stalls on a full pipe). Blocking.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: Data? = nil,
        directory: String? = nil, limit: Int = 64 << 20
    ) throws -> Output {
        let output = try makePipe()
        let errors = try makePipe()
        var input: (read: Int32, write: Int32)?
        do {
            if stdin != nil { input = try makePipe() }
        } catch {
            for fd in [output.read, output.write, errors.read, errors.write] { close(fd) }
            throw error
        }
        let child: ChildProcess
        do {
            child = try spawn(
                executable, arguments, environment: environment, stdin: input?.read, stdout: output.write,
                stderr: errors.write, directory: directory)
        } catch {
            for fd in [output.read, output.write, errors.read, errors.write, input?.read, input?.write].compactMap({
                $0
            }) {
                close(fd)
            }
            throw error
        }
        close(output.write)
        close(errors.write)
        if let input {
            close(input.read)
            let bytes = stdin ?? Data()
            // A thread of its own, so that a child that answers before it has read all its
            // input cannot deadlock against us.
            Thread.detachNewThread {
                bytes.withUnsafeBytes { buffer in
                    guard let base = buffer.baseAddress else { return }
                    var offset = 0
                    while offset < buffer.count {
                        let written = write(input.write, base + offset, buffer.count - offset)
                        if written < 0 && errno == EINTR { continue }
                        if written <= 0 { break }
                        offset += written
                    }
                }
                close(input.write)
            }
        }
        let (stdout, stderr) = drain(output.read, errors.read, limit: limit)
        close(output.read)
        close(errors.read)
        return Output(termination: child.wait(), stdout: stdout, stderr: stderr)
    }

    /// A pipe whose two ends are closed on exec (spawn's dup2 hands the child its copy).
    public static func makePipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard corral_pipe(&fds) == 0 else {
            throw CorralError(.io, "cannot make a pipe: \(String(cString: strerror(errno)))")
        }
        return (fds[0], fds[1])
    }

    /// Reads two descriptors to their ends at once.
    private static func drain(_ first: Int32, _ second: Int32, limit: Int) -> (Data, Data) {
        var collected = [Data(), Data()]
        var polled = [
            pollfd(fd: first, events: Int16(POLLIN), revents: 0), pollfd(fd: second, events: Int16(POLLIN), revents: 0),
        ]
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while polled.contains(where: { $0.fd >= 0 }) {
            guard poll(&polled, nfds_t(polled.count), -1) >= 0 else {
                if errno == EINTR { continue }
                break
            }
            for index in polled.indices where polled[index].fd >= 0 && polled[index].revents != 0 {
                let count = read(polled[index].fd, &buffer, buffer.count)
                if count < 0 && (errno == EINTR || errno == EAGAIN) { continue }
                if count <= 0 {
                    polled[index].fd = -1
                    continue
                }
                let room = limit - collected[index].count
                if room > 0 { collected[index].append(contentsOf: buffer[0..<min(count, room)]) }
            }
        }
        return (collected[0], collected[1])
    }
}
