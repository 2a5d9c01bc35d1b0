import CCorralInit
import ControlProtocol
import Glibc

/// Starts a command for the control connection, itself: one vfork and exec (no exec wrapper
/// in between), in a session and process group of its own, with stdout and stderr on pipes, or
/// everything on a new terminal, and stdin on a pipe or /dev/null. What the exec wrapper does
/// around a command (timeout, the group's kill at exit, the OOM report) the control loop does.
enum CommandSpawner {
    /// PATH when the environment has none: what the sandbox's image would use.
    static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    struct Started {
        var pid: pid_t
        var outputs: [(fd: Int32, source: OutputRing.Source)]
        var stdinFD: Int32
        var terminal: Int32?
    }

    /// Why nothing started: either the command cannot run (reported as its output and status,
    /// as the wrapper would), or the request cannot be met.
    enum Failure: Error {
        case command(message: String, status: Int)
        case request(ControlFailure)
    }

    static func spawn(_ request: ExecRequest, devNull: Int32) -> Result<Started, Failure> {
        let environment = mergedEnvironment(request.environment, terminal: request.terminal != nil)
        let candidates = resolve(request.arguments[0], path: value(of: "PATH", in: environment) ?? defaultPath)

        var ownedByChild: [Int32] = []  // closed here once the child has its copies
        var ours: [Int32] = []  // closed here if the spawn fails
        defer { for fd in ownedByChild { close(fd) } }
        func fail(_ failure: Failure) -> Result<Started, Failure> {
            for fd in ours { close(fd) }
            return .failure(failure)
        }

        var started = Started(pid: 0, outputs: [], stdinFD: -1, terminal: nil)
        var spawnRequest = corral_spawn_request(
            argv: nil, envp: nil, candidates: nil, directory: nil, stdin_fd: devNull, stdout_fd: -1, stderr_fd: -1,
            terminal_fd: -1)
        if let size = request.terminal {
            var primary: Int32 = -1
            var name = [CChar](repeating: 0, count: 128)
            let opened = corral_open_pty(&primary, &name, name.count)
            guard opened == 0 else {
                return fail(
                    .request(
                        ControlFailure(
                            ControlFailure.Code.system, errno: opened,
                            "cannot open a terminal")))
            }
            ours.append(primary)
            _ = corral_set_window_size(primary, UInt16(size.rows), UInt16(size.columns))
            let replicaPath = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let replica = open(replicaPath, O_RDWR | O_NOCTTY | O_CLOEXEC)
            guard replica >= 0 else {
                let error = errno
                return fail(
                    .request(
                        ControlFailure(
                            ControlFailure.Code.system, errno: error,
                            "cannot open the terminal \(replicaPath)")))
            }
            ownedByChild.append(replica)
            spawnRequest.terminal_fd = replica
            spawnRequest.stdin_fd = replica
            spawnRequest.stdout_fd = replica
            spawnRequest.stderr_fd = replica
            started.terminal = primary
            started.outputs = [(primary, .stdout)]
            started.stdinFD = primary
        } else {
            for source in [OutputRing.Source.stdout, .stderr] {
                var ends: [Int32] = [-1, -1]
                guard corral_pipe(&ends, 1, 0) == 0 else {
                    let error = errno
                    return fail(
                        .request(
                            ControlFailure(
                                ControlFailure.Code.system, errno: error, "cannot make a pipe"
                            )))
                }
                ours.append(ends[0])
                ownedByChild.append(ends[1])
                started.outputs.append((ends[0], source))
                if source == .stdout { spawnRequest.stdout_fd = ends[1] } else { spawnRequest.stderr_fd = ends[1] }
            }
            if request.stdin {
                var ends: [Int32] = [-1, -1]
                guard corral_pipe(&ends, 0, 1) == 0 else {
                    let error = errno
                    return fail(
                        .request(
                            ControlFailure(
                                ControlFailure.Code.system, errno: error, "cannot make a pipe"
                            )))
                }
                ownedByChild.append(ends[0])
                ours.append(ends[1])
                spawnRequest.stdin_fd = ends[0]
                started.stdinFD = ends[1]
            }
        }

        let argv = CStringArray(request.arguments)
        let envp = CStringArray(environment)
        let paths = CStringArray(candidates)
        var step: Int32 = 0
        let result = request.workingDirectory.withCString { directory -> Int32 in
            spawnRequest.directory = directory
            spawnRequest.argv = UnsafePointer(argv.pointer)
            spawnRequest.envp = UnsafePointer(envp.pointer)
            spawnRequest.candidates = UnsafePointer(paths.pointer)
            return corral_spawn(&spawnRequest, &started.pid, &step)
        }
        guard result == 0 else {
            let name = request.arguments[0]
            switch Int(step) {
            case Int(CORRAL_SPAWN_STEP_EXEC):
                if result == ENOENT {
                    return fail(.command(message: "\(name): command not found", status: 127))
                }
                return fail(.command(message: "cannot execute \(name): \(describeErrno(result))", status: 126))
            case Int(CORRAL_SPAWN_STEP_DIRECTORY):
                return fail(
                    .command(
                        message: "cannot change to \(request.workingDirectory): \(describeErrno(result))", status: 126))
            default:
                return fail(
                    .request(
                        ControlFailure(
                            ControlFailure.Code.spawn, errno: result, "cannot start \(name)")))
            }
        }
        return .success(started)
    }

    /// Where execve should look for `name`: the name itself when it holds a slash, else each
    /// directory of `path` in turn (an empty entry is the working directory).
    static func resolve(_ name: String, path: String) -> [String] {
        if name.contains("/") { return [name] }
        return path.split(separator: ":", omittingEmptySubsequences: false).map { directory in
            directory.isEmpty ? name : directory + "/" + name
        }
    }

    static func value(of key: String, in environment: [String]) -> String? {
        let prefix = key + "="
        return environment.last { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
    }

    /// PID 1's environment, with `overrides` (`KEY=VALUE`) replacing or adding variables; on a
    /// terminal, TERM defaults to xterm-256color.
    static func mergedEnvironment(_ overrides: [String], terminal: Bool) -> [String] {
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
        for entry in baseEnvironment { add(entry) }
        for entry in overrides where entry.contains("=") { add(entry) }
        if terminal && index["TERM"] == nil { add("TERM=xterm-256color") }
        return result
    }

    /// PID 1's environment, read once; nothing in corral-init changes it.
    static let baseEnvironment: [String] = {
        var result: [String] = []
        if let base = currentEnvironment() {
            var cursor = base
            while let entry = cursor.pointee {
                result.append(String(cString: entry))
                cursor += 1
            }
        }
        return result
    }()
}

/// A NULL-terminated array of C strings that lives as long as it does.
final class CStringArray {
    let pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
    private let count: Int

    init(_ strings: [String]) {
        count = strings.count
        pointer = .allocate(capacity: strings.count + 1)
        for (index, string) in strings.enumerated() { pointer[index] = strdup(string) }
        pointer[strings.count] = nil
    }

    deinit {
        for index in 0..<count { free(pointer[index]) }
        pointer.deallocate()
    }
}
