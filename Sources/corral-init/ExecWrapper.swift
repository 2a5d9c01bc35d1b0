import CorralPOSIX
import Glibc

/// `corral-init exec [--timeout S] [--grace S] -- CMD ARGS…`
///
/// Runs CMD in a session (and so a process group) of its own, with stdin, stdout and stderr
/// passed through, and exits with its status: the exit code, or 128 plus the signal. After
/// `--timeout` seconds it sends SIGTERM to the whole group, SIGKILL after `--grace` seconds
/// more, and exits 124. SIGTERM, SIGINT, SIGHUP and SIGQUIT sent to the wrapper go to the
/// group, so killing the wrapper by pid (the engine has no exec kill) stops the command.
///
/// When CMD exits on its own, whatever is left of its group is stopped the same way
/// (SIGTERM, SIGKILL after the grace). Decided so because a leftover background process that
/// still holds stdout keeps the engine's exec stream open: the tool call would hang until the
/// process ended, or its output would leak into the next call. A command that means to leave
/// a daemon running detaches it on purpose (`setsid CMD >log 2>&1 &`), which leaves the group.
///
/// It is meant for non-interactive commands (the `bash` tool): in a session of its own the
/// command has no controlling terminal, even when the engine's exec allocated a TTY.
///
/// Exit statuses of the wrapper itself follow timeout(1): 125 for bad usage or a failure of
/// the wrapper, 126 when CMD cannot be executed, 127 when it is not found.
enum ExecWrapper {
    struct Options {
        var timeout: Double?
        var grace: Double = 2
        /// Where the exit status is written, as decimal and a newline, before exiting (the
        /// control connection reads it there: PID 1's reaper takes the wrapper itself).
        var statusFD: Int32?
        /// Changed to before the command starts.
        var workingDirectory: String?
        var command: [String] = []
    }

    static let usage =
        "usage: corral-init exec [--timeout SECONDS] [--grace SECONDS] [--workdir DIR] [--status-fd N] -- COMMAND [ARGUMENT...]"

    static func parse(_ arguments: [String]) -> Result<Options, InitError> {
        var options = Options()
        var index = 0
        func value(for name: String) -> Result<Double, InitError> {
            let argument = arguments[index]
            let text: String
            if let equals = argument.firstIndex(of: "=") {
                text = String(argument[argument.index(after: equals)...])
            } else {
                index += 1
                guard index < arguments.count else {
                    return .failure(InitError("\(name) needs a number of seconds; \(usage)"))
                }
                text = arguments[index]
            }
            guard let seconds = parseSeconds(text) else {
                return .failure(InitError("\(name) \(text) is not a number of seconds (e.g. 30 or 0.5)"))
            }
            return .success(seconds)
        }
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--" {
                index += 1
                break
            }
            if argument == "--timeout" || argument.hasPrefix("--timeout=") {
                switch value(for: "--timeout") {
                case .success(let seconds): options.timeout = seconds > 0 ? seconds : nil
                case .failure(let error): return .failure(error)
                }
            } else if argument == "--grace" || argument.hasPrefix("--grace=") {
                switch value(for: "--grace") {
                case .success(let seconds): options.grace = seconds
                case .failure(let error): return .failure(error)
                }
            } else if argument == "--workdir" || argument == "--status-fd" {
                index += 1
                guard index < arguments.count else { return .failure(InitError("\(argument) needs a value; \(usage)")) }
                if argument == "--workdir" {
                    options.workingDirectory = arguments[index]
                } else {
                    guard let fd = Int32(arguments[index]), fd > 2 else {
                        return .failure(InitError("--status-fd \(arguments[index]) is not a descriptor above 2"))
                    }
                    options.statusFD = fd
                }
            } else if argument.hasPrefix("-") {
                return .failure(InitError("unknown option \(argument); \(usage)"))
            } else {
                break  // the command, without a `--` before it
            }
            index += 1
        }
        options.command = Array(arguments[index...])
        guard !options.command.isEmpty else {
            return .failure(InitError("no command given; \(usage)"))
        }
        return .success(options)
    }

    static func run(_ arguments: [String]) -> Int32 {
        switch parse(arguments) {
        case .failure(let error):
            logLine(error.message)
            return 125
        case .success(let options):
            var status: Int32
            if let fd = options.statusFD {
                closeDescriptors(above: 2, except: fd)
                // The status is the wrapper's to write. A command that inherited the pipe could
                // write one of its own, and a daemon it left behind would hold the pipe open,
                // so that PID 1 took the command for running until the daemon ended.
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            }
            if let directory = options.workingDirectory, chdir(directory) != 0 {
                logLine("cannot change to \(directory): \(describeErrno(errno))")
                status = 126
            } else {
                status = Supervisor(options: options).run()
            }
            if let fd = options.statusFD {
                _ = writeFully(fd, Array("\(status)\n".utf8))
                close(fd)
            }
            return status
        }
    }
}

/// Starts the command and watches it until it and its group are gone.
private struct Supervisor {
    let options: ExecWrapper.Options

    private static let forwardedSignals: [Int32] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT]

    /// How often to look whether the group is empty once the command has exited. Leftovers
    /// are reparented to PID 1, so no SIGCHLD tells us when they go.
    private static let groupPollSeconds = 0.01

    func run() -> Int32 {
        let signals = SignalSet([SIGCHLD] + Self.forwardedSignals)
        // Blocked before the spawn, so a fast command's SIGCHLD cannot slip past.
        let originalMask = signals.block()

        let oomKillsBefore = OOMCounter.read()
        let spawned = spawn(restoringMask: originalMask)
        guard case .success(let child) = spawned else {
            if case .failure(let failure) = spawned {
                logLine(failure.message)
                return failure.status
            }
            return 125
        }
        // With POSIX_SPAWN_SETSID the command leads a new session and group: pgid == pid.
        let group = child

        var childStatus: WaitStatus?
        var timedOut = false
        let timeoutDeadline = options.timeout.map { MonotonicInstant.now().adding(seconds: $0) }
        var killDeadline: MonotonicInstant?  // SIGKILL the group once this passes
        var giveUpDeadline: MonotonicInstant?  // after SIGKILL, stop waiting for stragglers

        func terminateGroup() {
            guard killDeadline == nil else { return }
            kill(-group, SIGTERM)
            kill(-group, SIGCONT)  // a stopped process cannot act on SIGTERM until it runs
            killDeadline = MonotonicInstant.now().adding(seconds: options.grace)
        }

        while true {
            if childStatus == nil {
                childStatus = reap(child)
                if childStatus != nil { terminateGroup() }
            }
            if childStatus != nil && !groupAlive(group) { break }

            let now = MonotonicInstant.now()
            if let giveUpDeadline, giveUpDeadline <= now {
                logLine("process group \(group) still has members after SIGKILL; leaving them")
                break
            }
            // Only the command itself can time out: once it has exited, its status stands,
            // and leftovers are already being stopped.
            if !timedOut, childStatus == nil, let timeoutDeadline, timeoutDeadline <= now {
                timedOut = true
                terminateGroup()
            }
            if let deadline = killDeadline, deadline <= now, giveUpDeadline == nil {
                kill(-group, SIGKILL)
                giveUpDeadline = now.adding(seconds: 1)
            }

            var wake = [timeoutDeadline, killDeadline, giveUpDeadline].compactMap { $0 }.filter { now < $0 }.min()
            if childStatus != nil {
                let poll = now.adding(seconds: Self.groupPollSeconds)
                wake = wake.map { min($0, poll) } ?? poll
            }
            if let signal = signals.wait(until: wake), signal != SIGCHLD {
                kill(-group, signal)
            }
        }

        if let before = oomKillsBefore, let after = OOMCounter.read(), after > before {
            logLine(
                "\(OOMCounter.marker) the kernel killed \(after - before) process(es) in this sandbox while the "
                    + "command ran: the sandbox's memory limit was reached")
        }
        if timedOut { return 124 }
        return childStatus?.shellStatus ?? 125
    }

    private func reap(_ child: pid_t) -> WaitStatus? {
        while true {
            var status: Int32 = 0
            let pid = waitpid(child, &status, WNOHANG)
            if pid == child { return WaitStatus(raw: status) }
            if pid < 0 && errno == EINTR { continue }
            return nil
        }
    }

    /// True while a live process is left in the group. A killed orphan stays a zombie (and a
    /// member, for kill(2)) until its new parent reaps it; corral-init as PID 1 does that at
    /// once, other inits may take seconds, so zombies are looked past in /proc. EPERM means
    /// members exist that we may not signal: the give-up deadline ends that wait.
    private func groupAlive(_ group: pid_t) -> Bool {
        if kill(-group, 0) != 0 && errno != EPERM { return false }
        return ProcessTable.hasLiveMember(ofGroup: group) ?? true
    }

    private struct SpawnFailure: Error {
        var message: String
        var status: Int32
    }

    private func spawn(restoringMask originalMask: sigset_t) -> Result<pid_t, SpawnFailure> {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var mask = originalMask
        posix_spawnattr_setsigmask(&attributes, &mask)
        // glibc's POSIX_SPAWN_SETSID (0x80) is behind __USE_GNU and does not import.
        let setSID: Int32 = 0x80
        posix_spawnattr_setflags(&attributes, Int16(Int32(POSIX_SPAWN_SETSIGMASK) | setSID))

        let argv: [UnsafeMutablePointer<CChar>?] = options.command.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        guard let file = argv[0] else {
            return .failure(SpawnFailure(message: "out of memory", status: 125))
        }
        var pid: pid_t = 0
        let result = argv.withUnsafeBufferPointer { pointers -> Int32 in
            guard let base = pointers.baseAddress else { return ENOMEM }
            return posix_spawnp(&pid, file, nil, &attributes, base, currentEnvironment())
        }
        switch result {
        case 0:
            return .success(pid)
        case ENOENT:
            return .failure(SpawnFailure(message: "\(options.command[0]): command not found", status: 127))
        default:
            return .failure(
                SpawnFailure(message: "cannot execute \(options.command[0]): \(describeErrno(result))", status: 126))
        }
    }
}

/// Closes every open descriptor above `floor` but `except`: started by PID 1, the wrapper may
/// have inherited descriptors of other connections, which the command must not see.
func closeDescriptors(above floor: Int32, except: Int32) {
    guard let directory = opendir("/proc/self/fd") else { return }
    let own = dirfd(directory)
    var stray: [Int32] = []
    while let entry = readdir(directory) {
        let name = DirectoryEntry.name(entry)
        if let fd = Int32(name), fd > floor, fd != except, fd != own { stray.append(fd) }
    }
    closedir(directory)
    for fd in stray { close(fd) }
}
