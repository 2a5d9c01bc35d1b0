import ControlProtocol
import Glibc

/// PID 1 of a sandbox: reaps every orphan, serves the egress forwarder when a gateway socket
/// is configured, and on SIGTERM or SIGINT stops everything else and exits 0.
///
/// Signals are blocked and taken synchronously with `sigwaitinfo`, so nothing runs in a
/// signal handler and the process sleeps between events. The handlers installed below do
/// nothing; they exist because the kernel drops signals whose disposition is the default
/// when they are sent to a namespace's init, and a runtime (gVisor's in particular) may
/// decide that before it looks at the blocked mask.
struct InitProcess {
    struct Configuration: Sendable {
        /// How long processes get between SIGTERM and SIGKILL at shutdown. Shorter than the
        /// engine's own stop timeout (10 s by default), so that we exit 0 before it kills us.
        var shutdownGrace: Double = 2
        var forwarder: EgressForwarder.Configuration?
        /// The host's control socket to dial (`CORRAL_CONTROL_SOCKET`); no control
        /// connection without it, nor without `controlKey`.
        var controlSocketPath: String?
        /// The sandbox's control key, read at boot from `control.key` beside the socket.
        var controlKey: ControlKey?

        /// Reads the control key the host put beside the control socket, once, before anything
        /// else runs in the sandbox (the host deletes the file once corral-init has said hello).
        /// Without the key, or when this process could not be made undumpable (the key would
        /// then be readable through /proc/1 by the sandbox's user), there is no control
        /// connection: the host uses the engine's exec.
        mutating func loadControlKey(undumpable: Bool) {
            guard let socketPath = controlSocketPath else { return }
            let keyPath = Self.keyPath(besideSocket: socketPath)
            guard undumpable else {
                logLine("cannot make PID 1 undumpable (prctl): no control connection, so \(keyPath) is not read")
                controlSocketPath = nil
                return
            }
            switch readSmallFile(keyPath, limit: ControlKey.maxFileSize) {
            case .success(let text):
                if let key = ControlKey(hex: text) {
                    controlKey = key
                } else {
                    logLine("\(keyPath) does not hold a control key: no control connection")
                    controlSocketPath = nil
                }
            case .failure(let error):
                logLine("\(error.message): no control connection")
                controlSocketPath = nil
            }
        }

        /// `control.key` in the control socket's directory.
        static func keyPath(besideSocket socketPath: String) -> String {
            guard let slash = socketPath.lastIndex(of: "/") else { return ControlKey.fileName }
            return socketPath[...slash] + ControlKey.fileName
        }
    }

    /// Reads `CORRAL_GATEWAY_SOCKET`, `CORRAL_CONTROL_SOCKET`, `CORRAL_PROXY_PORT` and
    /// `CORRAL_INIT_GRACE`.
    static func configurationFromEnvironment() -> Result<Configuration, InitError> {
        var configuration = Configuration()
        if let grace = environmentValue("CORRAL_INIT_GRACE") {
            guard let seconds = parseSeconds(grace) else {
                return .failure(InitError("CORRAL_INIT_GRACE=\(grace) is not a number of seconds; use e.g. 2"))
            }
            configuration.shutdownGrace = seconds
        }
        if let socketPath = environmentValue("CORRAL_GATEWAY_SOCKET") {
            var forwarder = EgressForwarder.Configuration(gatewaySocketPath: socketPath)
            if let portText = environmentValue("CORRAL_PROXY_PORT") {
                guard let port = UInt16(portText), port > 0 else {
                    return .failure(InitError("CORRAL_PROXY_PORT=\(portText) is not a TCP port; use 1-65535"))
                }
                forwarder.listenPort = port
            }
            guard socketPath.utf8.count < EgressForwarder.maxSocketPathLength else {
                return .failure(
                    InitError(
                        "CORRAL_GATEWAY_SOCKET is longer than \(EgressForwarder.maxSocketPathLength - 1) bytes; mount the gateway directory at a shorter path"
                    ))
            }
            configuration.forwarder = forwarder
        }
        if let control = environmentValue("CORRAL_CONTROL_SOCKET") {
            guard control.utf8.count < EgressForwarder.maxSocketPathLength else {
                return .failure(InitError("CORRAL_CONTROL_SOCKET is longer than 107 bytes"))
            }
            configuration.controlSocketPath = control
        }
        return .success(configuration)
    }

    let configuration: Configuration

    private static let handledSignals: [Int32] = [SIGCHLD, SIGTERM, SIGINT]

    func run() -> Never {
        for signal in Self.handledSignals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { _ in }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(signal, &action, nil)
        }
        // Before any thread exists: threads inherit the mask, so no thread can take these
        // signals through the empty handler and lose them. SIGPIPE too: a command that closes
        // its stdin must give PID 1 an EPIPE, not kill it. (Commands start with every signal
        // unblocked.)
        _ = SignalSet(Self.handledSignals + [SIGPIPE]).block()
        // With a control connection, its loop takes SIGCHLD (from a signalfd) and reaps every
        // child, so that it learns each command's status as it exits; this thread waits for
        // the signals that stop the sandbox.
        let controlled = configuration.controlSocketPath != nil && configuration.controlKey != nil
        let signals = SignalSet(controlled ? [SIGTERM, SIGINT] : Self.handledSignals)

        if let forwarderConfiguration = configuration.forwarder {
            switch EgressForwarder.start(configuration: forwarderConfiguration) {
            case .success: break
            case .failure(let error):
                logLine(error.message)
                exit(1)
            }
        }

        if let controlSocketPath = configuration.controlSocketPath, let key = configuration.controlKey {
            switch ControlLoop.start(socketPath: controlSocketPath, key: key) {
            case .success: break
            case .failure(let error):
                logLine(error.message)
                exit(1)
            }
        }

        while true {
            guard let signal = signals.wait(until: nil) else { continue }
            switch signal {
            case SIGCHLD:
                _ = reapChildren()
            default:
                shutDown(signals: signals)
            }
        }
    }

    /// Reaps every child that has exited. Returns false once there are no children at all.
    @discardableResult
    private func reapChildren() -> Bool {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            if pid > 0 { continue }
            if pid == 0 { return true }
            if errno == EINTR { continue }
            return false  // ECHILD
        }
    }

    /// True while some other process that we may signal is still alive. Processes started by
    /// the engine's exec are not our children, so `waitpid` alone cannot tell.
    private func othersRemain() -> Bool {
        kill(-1, 0) == 0
    }

    private func shutDown(signals: SignalSet) -> Never {
        // kill(-1) outside a PID namespace would reach every process of this user on the
        // host. Not being PID 1 means someone started us by hand: there is nothing to stop.
        guard getpid() == 1 else {
            reapChildren()
            exit(0)
        }
        kill(-1, SIGTERM)
        kill(-1, SIGCONT)  // a stopped process cannot act on SIGTERM until it runs again
        let graceDeadline = MonotonicInstant.now().adding(seconds: configuration.shutdownGrace)
        waitForOthers(until: graceDeadline, signals: signals)
        if othersRemain() {
            kill(-1, SIGKILL)
            // SIGKILL cannot be refused, but exit must not hang on a process stuck in the
            // kernel: the engine kills the whole namespace once we are gone anyway.
            waitForOthers(until: MonotonicInstant.now().adding(seconds: 1), signals: signals)
        }
        exit(0)
    }

    /// Reaps as children exit, until no other process is left or the deadline passes.
    private func waitForOthers(until deadline: MonotonicInstant, signals: SignalSet) {
        while true {
            reapChildren()
            if !othersRemain() { return }
            let now = MonotonicInstant.now()
            if deadline <= now { return }
            // Orphans announce themselves with SIGCHLD; exec'd processes do not, so poll too.
            _ = signals.wait(until: min(deadline, now.adding(seconds: 0.02)))
        }
    }
}

/// A startup failure, reported on stderr as one line.
struct InitError: Error, Sendable {
    var message: String
    init(_ message: String) { self.message = message }
}
