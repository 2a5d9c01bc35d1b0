import CCorralProcess
import CorralCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The host agent: `corral serve --agent`, which the command line starts on demand for a
/// state directory where no service runs, and which stops by itself once idle (5 minutes, or
/// `CORRAL_AGENT_IDLE`).
///
/// Why: a command that drives the engine itself pays the engine's exec (about 50 ms a
/// command here) and a process that holds nothing between calls. Through the agent, a
/// command is one request on a unix socket to a process that keeps every sandbox's control
/// connection (a few milliseconds), which is how `corral exec` beats `docker exec`. The other
/// way considered, handing corral-init's connection to each command process, would make
/// corral-init redial for every command, and a redial waits out its backoff.
///
/// `CORRAL_AGENT=0` turns it off: commands then drive the engine themselves, as before.
enum HostAgent {
    /// Whether commands may start an agent (CORRAL_AGENT unset, or anything but 0, off, false, no).
    static func enabled(environment: [String: String]) -> Bool {
        guard let value = environment["CORRAL_AGENT"]?.lowercased() else { return true }
        return !["0", "off", "false", "no"].contains(value)
    }

    /// How long an idle agent waits before it stops: CORRAL_AGENT_IDLE, else 5 minutes.
    static func idleExit(environment: [String: String]) -> Duration {
        environment["CORRAL_AGENT_IDLE"].flatMap { try? Duration(parsing: $0) } ?? .seconds(300)
    }

    /// The agent's output, in the state directory: what went wrong when it did not start.
    static func logFile(state: URL) -> URL { state.appendingPathComponent("agent.log") }

    /// Starts the agent for `state` and returns once its socket answers. When another command
    /// started one at the same moment, that one is used. Throws when none answers, with the
    /// last line of the agent's log.
    static func start(state: URL, socket: String, global: GlobalOptions) async throws {
        let log = logFile(state: state)
        try await runOnThread(name: "corral-agent-start") {
            try spawnAndWait(state: state, log: log, global: global)
        }
        // Another command may have started the agent a moment before ours found the state
        // directory taken: its socket answers once it is up.
        let deadline = ContinuousClock.now + .seconds(15)
        while !UnixSocketPath.accepts(socket), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        guard UnixSocketPath.accepts(socket) else {
            let last =
                ((try? String(contentsOf: log, encoding: .utf8)) ?? "")
                .split(separator: "\n").last.map(String.init) ?? "no output"
            throw CorralError(
                .unavailable, "the host agent for \(state.path) did not start: \(last.prefix(300))",
                hint: "see \(log.path); CORRAL_AGENT=0 runs commands without it")
        }
    }

    private static func spawnAndWait(state: URL, log: URL, global: GlobalOptions) throws {
        // A long log from earlier agents is cut: only the latest starts matter.
        if let size = try? FileManager.default.attributesOfItem(atPath: log.path)[.size] as? Int, size > 1 << 20 {
            try? FileManager.default.removeItem(at: log)
        }
        let output = open(log.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard output >= 0 else {
            throw CorralError(.io, "cannot open \(log.path): \(String(cString: strerror(errno)))")
        }
        defer { close(output) }
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else {
            throw CorralError(.io, "cannot make a pipe for the host agent: \(String(cString: strerror(errno)))")
        }
        let (ready, told) = (pipeFDs[0], pipeFDs[1])
        defer { close(ready) }
        let executable =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        var arguments = [executable, "serve", "--agent", "--ready-fd", "3", "--state-dir", state.path]
        // The engine the command was told to use, so that the agent uses the same.
        for (flag, value) in [
            ("--engine", global.engine), ("--tls-ca", global.tlsCA), ("--tls-cert", global.tlsCert),
            ("--tls-key", global.tlsKey),
        ] {
            if let value { arguments += [flag, value] }
        }
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        var pid: pid_t = 0
        let status = withCStrings(arguments) { argv in
            withCStrings(environment) { envp in
                corral_spawn_detached(executable, argv, envp, output, told, &pid)
            }
        }
        close(told)
        guard status == 0 else {
            throw CorralError(
                .unavailable, "cannot start the host agent (\(executable)): \(String(cString: strerror(status)))",
                hint: "CORRAL_AGENT=0 runs commands without it")
        }
        // One byte once it listens; end of file when it exits first (another agent won the
        // socket, or it failed: the caller tells which).
        var pollFD = pollfd(fd: ready, events: Int16(POLLIN), revents: 0)
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let left = deadline - ContinuousClock.now
            let answered = poll(&pollFD, 1, Int32(max(1, left.components.seconds * 1000)))
            if answered < 0 && errno == EINTR { continue }
            break
        }
        var byte: UInt8 = 0
        _ = read(ready, &byte, 1)
        // The agent is not this process's child to wait for: it outlives the command. Its
        // exit status is collected by init once it is reparented.
        _ = pid
    }

    private static func withCStrings<T>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> T) -> T {
        var pointers = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for pointer in pointers { free(pointer) } }
        return body(pointers)
    }
}
