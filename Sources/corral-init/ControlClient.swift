import ControlProtocol
import Glibc
import Synchronization

/// The control connection: PID 1 dials the host's control socket (bind-mounted, read-only,
/// beside the gateway's) and runs the commands the host sends down it, so that a command
/// costs a fork and a few frames instead of the engine's exec (a runtime exec, an attach and
/// an inspect). The sandbox dials out, never listens: gVisor lets a sandbox open a host socket
/// (`--host-uds=open`) but not offer one.
///
/// Any process in the sandbox can dial that socket, so the first frame is a hello carrying the
/// sandbox's control key, which only PID 1 holds (read at boot, kept in this undumpable
/// process's memory; see `ControlProtocol.swift`). The host answers `welcome`, or refuses and
/// closes. A forger without the key is refused and cannot displace this connection.
///
/// The connection is redialled whenever it is down: at once after a welcomed connection
/// ends (a restarted service binds the socket anew), with backoff while the socket is absent
/// or the host refuses.
///
/// Each command runs under `corral-init exec` (timeout, process group, OOM report) with
/// stdin from /dev/null; the wrapper reports its exit status on a pipe, so PID 1's reaper
/// can take every child without keeping a table. Nothing here adds privilege: commands run
/// as PID 1 does, which is the sandbox's own user.
final class ControlClient: Sendable {
    typealias Frame = ControlFrameKind

    let socketPath: String
    let initPath: String
    private let key: ControlKey
    /// The socket in use, or -1; writes of whole frames hold the lock.
    private let connection = Mutex<Int32>(-1)
    /// Running commands by id: the wrapper's pid.
    private let running = Mutex<[UInt32: pid_t]>([:])

    init(socketPath: String, key: ControlKey, initPath: String) {
        self.socketPath = socketPath
        self.key = key
        self.initPath = initPath
    }

    static func start(socketPath: String, key: ControlKey, initPath: String) -> Result<ControlClient, InitError> {
        let client = ControlClient(socketPath: socketPath, key: key, initPath: initPath)
        guard spawnDetachedThread({ client.dialLoop() }) else {
            return .failure(InitError("cannot start the control thread: \(describeErrno(errno))"))
        }
        return .success(client)
    }

    private func dialLoop() {
        let shortest: useconds_t = 5_000
        var delay = shortest
        func backOff() {
            usleep(delay)
            delay = min(delay * 2, 500_000)
        }
        while true {
            guard case .success(let fd) = connectUnixSocket(socketPath) else {
                backOff()
                continue
            }
            connection.withLock { $0 = fd }
            send(.hello, id: 0, ControlHello(initVersion: corralInitVersion, key: key).encoded())
            let welcomed = serve(fd)
            connection.withLock { $0 = -1 }
            shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
            // Whoever sent these is gone: stop what it started rather than leave it running.
            for pid in running.withLock({ Array($0.values) }) { kill(pid, SIGTERM) }
            // A connection the host refused must not turn into a loop of dials.
            if welcomed {
                delay = shortest
            } else {
                backOff()
            }
        }
    }

    /// Reads frames until the connection ends or sends something malformed; true when the
    /// host welcomed this connection.
    private func serve(_ fd: Int32) -> Bool {
        var welcomed = false
        var header = [UInt8](repeating: 0, count: ControlFrameHeader.size)
        while readFully(fd, &header, count: ControlFrameHeader.size) {
            guard let frame = ControlFrameHeader(parsing: header), frame.isValid else { break }
            var payload = [UInt8](repeating: 0, count: frame.length)
            guard frame.length == 0 || readFully(fd, &payload, count: frame.length) else { break }
            switch frame.kind {
            case .welcome:
                welcomed = true
            case .exec:
                start(id: frame.id, payload)
            case .kill:
                if let pid = running.withLock({ $0[frame.id] }) { kill(pid, SIGTERM) }
            default:
                return welcomed
            }
        }
        return welcomed
    }

    private func start(id: UInt32, _ payload: [UInt8]) {
        guard let request = ExecRequest(decoding: payload) else {
            send(.failed, id: id, Array("corral-init: malformed exec request".utf8))
            return
        }
        var wrapper = [initPath, "exec", "--status-fd", "3", "--workdir", request.workingDirectory]
        if request.timeoutMilliseconds > 0 {
            wrapper += [
                "--timeout", Self.seconds(request.timeoutMilliseconds), "--grace",
                Self.seconds(request.graceMilliseconds),
            ]
        }
        wrapper += ["--"] + request.arguments
        switch spawnWrapper(wrapper, overrides: request.environment) {
        case .failure(let message):
            send(.failed, id: id, Array("corral-init: \(message)".utf8))
        case .success(let (pid, out, err, status)):
            running.withLock { $0[id] = pid }
            let started = spawnDetachedThread { [self] in
                pump(id: id, out: out, err: err, status: status)
            }
            if !started {
                kill(pid, SIGKILL)
                close(out)
                close(err)
                close(status)
                running.withLock { _ = $0.removeValue(forKey: id) }
                send(.failed, id: id, Array("corral-init: cannot start a thread: \(describeErrno(errno))".utf8))
            }
        }
    }

    static func seconds(_ milliseconds: UInt64) -> String {
        String(Double(milliseconds) / 1000)
    }

    private enum Spawned {
        case success((pid_t, Int32, Int32, Int32))
        case failure(String)
    }

    /// Starts the wrapper with stdout, stderr and fd 3 (its status) on pipes and stdin on
    /// /dev/null, every signal unblocked and at its default.
    private func spawnWrapper(_ arguments: [String], overrides: [String]) -> Spawned {
        var pipes: [Int32] = []
        for _ in 0..<3 {
            var ends: [Int32] = [0, 0]
            // pipe2 is not imported; the wrapper closes whatever leaks past the fcntl.
            guard pipe(&ends) == 0 else {
                for fd in pipes { close(fd) }
                return .failure("cannot make a pipe: \(describeErrno(errno))")
            }
            for fd in ends { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            pipes += ends
        }
        defer {
            // The write ends belong to the child now.
            close(pipes[1])
            close(pipes[3])
            close(pipes[5])
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, pipes[1], 1)
        posix_spawn_file_actions_adddup2(&actions, pipes[3], 2)
        posix_spawn_file_actions_adddup2(&actions, pipes[5], 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let environment = Self.mergedEnvironment(overrides)
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = argv.withUnsafeBufferPointer { args -> Int32 in
            envp.withUnsafeBufferPointer { env -> Int32 in
                guard let args = args.baseAddress, let env = env.baseAddress else { return ENOMEM }
                return posix_spawn(&pid, initPath, &actions, &attributes, args, env)
            }
        }
        guard result == 0 else {
            close(pipes[0])
            close(pipes[2])
            close(pipes[4])
            return .failure("cannot start \(initPath): \(describeErrno(result))")
        }
        return .success((pid, pipes[0], pipes[2], pipes[4]))
    }

    /// PID 1's environment, with `overrides` (`KEY=VALUE`) replacing or adding variables.
    static func mergedEnvironment(_ overrides: [String]) -> [String] {
        var result: [String] = []
        var index: [Substring: Int] = [:]
        func add(_ entry: String) {
            let key = entry.prefix { $0 != "=" }
            if let at = index[key] {
                result[at] = entry
            } else {
                index[key] = result.count
                result.append(entry)
            }
        }
        if let base = currentEnvironment() {
            var cursor = base
            while let entry = cursor.pointee {
                add(String(cString: entry))
                cursor += 1
            }
        }
        for entry in overrides where entry.contains("=") { add(entry) }
        return result
    }

    /// Copies the command's output to the host as it comes, then its status. Once the wrapper
    /// has exited (its status pipe closes), what is left in the pipes is sent and the rest is
    /// not waited for: a daemon the command detached may hold them open for ever.
    private func pump(id: UInt32, out: Int32, err: Int32, status: Int32) {
        var descriptors = [
            pollfd(fd: out, events: Int16(POLLIN), revents: 0),
            pollfd(fd: err, events: Int16(POLLIN), revents: 0),
            pollfd(fd: status, events: Int16(POLLIN), revents: 0),
        ]
        // The host reads no larger frame from the sandbox.
        var buffer = [UInt8](repeating: 0, count: ControlFrameHeader.maxSandboxPayload)
        var statusText: [UInt8] = []
        var exited = false
        var drained = 0
        while descriptors.contains(where: { $0.fd >= 0 }) {
            let ready = poll(&descriptors, nfds_t(descriptors.count), exited ? 0 : -1)
            if ready < 0 {
                if errno == EINTR { continue }
                break
            }
            if ready == 0 { break }  // exited, and nothing more is waiting
            for slot in 0..<descriptors.count where descriptors[slot].fd >= 0 && descriptors[slot].revents != 0 {
                let count = buffer.withUnsafeMutableBytes { read(descriptors[slot].fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    if slot == 2 {
                        statusText += buffer[0..<min(count, 16)]
                    } else {
                        send(slot == 0 ? .stdout : .stderr, id: id, Array(buffer[0..<count]))
                        if exited { drained += count }
                    }
                } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                    close(descriptors[slot].fd)
                    descriptors[slot].fd = -1
                    if slot == 2 { exited = true }
                }
            }
            if exited && drained > 16 << 20 { break }
        }
        for slot in descriptors where slot.fd >= 0 { close(slot.fd) }
        running.withLock { _ = $0.removeValue(forKey: id) }
        let text = statusText.prefix { $0 != UInt8(ascii: "\n") }
        if text.isEmpty {
            send(.failed, id: id, Array("corral-init: the command's wrapper ended without a status".utf8))
        } else {
            send(.exit, id: id, Array(text))
        }
    }

    /// Writes one frame whole; a frame for a connection that has gone is dropped.
    private func send(_ kind: Frame, id: UInt32, _ payload: [UInt8]) {
        let frame = ControlFrameHeader(kind, id: id, length: payload.count).bytes + payload
        connection.withLock { fd in
            guard fd >= 0 else { return }
            if !writeFully(fd, frame, socket: true) { shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }
}

/// Reads exactly `count` bytes; false at end of stream or on an error.
func readFully(_ fd: Int32, _ buffer: inout [UInt8], count: Int) -> Bool {
    var offset = 0
    while offset < count {
        let got = buffer.withUnsafeMutableBytes { raw -> Int in
            guard let base = raw.baseAddress else { return -1 }
            return read(fd, base + offset, count - offset)
        }
        if got > 0 {
            offset += got
        } else if got < 0 && errno == EINTR {
            continue
        } else {
            return false
        }
    }
    return true
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
