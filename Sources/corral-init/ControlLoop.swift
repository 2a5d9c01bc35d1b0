import CCorralInit
import ControlProtocol
import Glibc

/// The control connection, inside the sandbox: PID 1 dials the host's control socket
/// (bind-mounted, read-only, beside the gateway's), proves itself with the sandbox's key, and
/// runs what the host asks over it: commands (spawned here, each in a session and process
/// group of its own, with stdin, a terminal, and a life beyond the connection when started
/// detached), signals, listings and file operations, multiplexed by stream id with a flow
/// control window per stream each way (see `ControlProtocol.swift`). The sandbox dials out,
/// never listens: gVisor lets a sandbox open a host socket (`--host-uds=open`) but not offer
/// one.
///
/// Any process in the sandbox can dial that socket, so the first frame is a hello carrying the
/// sandbox's control key, which only PID 1 holds (read at boot, kept in this undumpable
/// process's memory). The host answers `welcome`, or refuses and closes. The connection is
/// redialled whenever it is down: at once after a welcomed connection ends (a restarted
/// service binds the socket anew), with backoff while the socket is absent or the host
/// refuses.
///
/// One thread runs everything: a poll over the connection, every command's descriptors and
/// a signalfd for SIGCHLD (this thread reaps PID 1's children, so that it learns each
/// command's status the moment it exits). Nothing here adds privilege: commands and file
/// operations run as PID 1 does, which is the sandbox's own user.
final class ControlLoop: @unchecked Sendable {
    // One thread owns every field below; `@unchecked Sendable` only lets `start` hand the
    // object to that thread.

    let socketPath: String
    private let key: ControlKey
    private let signalFD: Int32
    private let devNull: Int32
    private var connection: LoopConnection?
    private var redialAt = MonotonicInstant(nanoseconds: 0)
    private var backoff = ControlLoop.shortestBackoff
    private var commands: [String: Command] = [:]
    private var byPID: [pid_t: Command] = [:]
    private var streams: [UInt32: Target] = [:]
    private var readBuffer = [UInt8](repeating: 0, count: 64 << 10)
    private var nextRetentionCheck = MonotonicInstant.now()

    private enum Target {
        case command(Command, CommandReader)
        case transfer(any FileTransfer)
    }

    static let shortestBackoff = 0.005
    static let longestBackoff = 0.5
    /// How often a group that outlived its command is looked at again.
    static let groupPollSeconds = 0.02

    private init(socketPath: String, key: ControlKey, signalFD: Int32, devNull: Int32) {
        self.socketPath = socketPath
        self.key = key
        self.signalFD = signalFD
        self.devNull = devNull
    }

    /// Starts the loop on a thread of its own. SIGCHLD must be blocked in every thread: the
    /// loop takes it from a signalfd, and reaps every child of PID 1.
    static func start(socketPath: String, key: ControlKey) -> Result<ControlLoop, InitError> {
        var mask = sigset_t()
        sigemptyset(&mask)
        sigaddset(&mask, SIGCHLD)
        let signalFD = corral_signalfd(&mask)
        guard signalFD >= 0 else { return .failure(InitError("cannot make a signalfd: \(describeErrno(errno))")) }
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        guard devNull >= 0 else {
            close(signalFD)
            return .failure(InitError("cannot open /dev/null: \(describeErrno(errno))"))
        }
        let loop = ControlLoop(socketPath: socketPath, key: key, signalFD: signalFD, devNull: devNull)
        guard spawnDetachedThread(stackSize: 1 << 20, { loop.run() }) else {
            return .failure(InitError("cannot start the control thread: \(describeErrno(errno))"))
        }
        return .success(loop)
    }

    // MARK: The loop

    private func run() {
        while true {
            var now = MonotonicInstant.now()
            if connection == nil && redialAt <= now { dial(now: now) }

            var descriptors: [pollfd] = [pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0)]
            var roles: [Role] = [.signals]
            if let connection {
                var events = Int16(POLLIN)
                if connection.pendingOutput > 0 { events |= Int16(POLLOUT) }
                descriptors.append(pollfd(fd: connection.fd, events: events, revents: 0))
                roles.append(.connection)
            }
            for command in commands.values where command.exit == nil {
                let mayRead = command.room > 0
                for (index, output) in command.outputs.enumerated() where mayRead {
                    descriptors.append(pollfd(fd: output.fd, events: Int16(POLLIN), revents: 0))
                    roles.append(.output(command, index))
                }
                if command.stdinFD >= 0 && !command.stdinBuffer.isEmpty {
                    // A terminal's primary side may be listed twice: once to read, once to write.
                    descriptors.append(pollfd(fd: command.stdinFD, events: Int16(POLLOUT), revents: 0))
                    roles.append(.stdin(command))
                }
            }
            let timeout = pollTimeout(now: now)
            let ready = poll(&descriptors, nfds_t(descriptors.count), timeout)
            if ready < 0 && errno != EINTR {
                logLine("control loop: poll failed: \(describeErrno(errno))")
                usleep(10_000)
            }
            now = MonotonicInstant.now()
            var reaped = false
            var connectionReady: Int16 = 0
            if ready > 0 {
                for (index, descriptor) in descriptors.enumerated() where descriptor.revents != 0 {
                    switch roles[index] {
                    case .signals:
                        _ = corral_drain_signalfd(signalFD)
                        reaped = true
                    case .connection:
                        connectionReady = descriptor.revents
                    case .output(let command, let slot):
                        if slot < command.outputs.count && command.outputs[slot].fd == descriptor.fd {
                            readOutput(command, slot: slot, rounds: 4)
                        }
                    case .stdin(let command):
                        writeStdin(command)
                    }
                }
            }
            if reaped { reap() }
            if connectionReady != 0 { serveConnection(connectionReady, now: now) }
            for command in Array(commands.values) where command.exit == nil { advance(command, now: now) }
            pump()
            if let connection, connection.pendingOutput > 0, !connection.flush() { dropConnection(now: now) }
            if nextRetentionCheck <= now { retain(now: now) }
        }
    }

    private enum Role {
        case signals
        case connection
        case output(Command, Int)
        case stdin(Command)
    }

    /// Milliseconds until the next timer, -1 for none, 0 when output waits to be sent.
    private func pollTimeout(now: MonotonicInstant) -> Int32 {
        if hasPumpWork() { return 0 }
        var next: MonotonicInstant?
        func consider(_ instant: MonotonicInstant?) {
            guard let instant else { return }
            next = next.map { min($0, instant) } ?? instant
        }
        if connection == nil { consider(redialAt) }
        for command in commands.values where command.exit == nil {
            if command.status == nil {
                if !command.timedOut { consider(command.timeoutDeadline) }
            } else if !command.groupGone {
                consider(command.groupCheckAt)
            }
            if command.giveUpDeadline == nil {
                consider(command.killDeadline)
            } else {
                consider(command.giveUpDeadline)
            }
        }
        if commands.values.contains(where: { $0.exit != nil }) { consider(nextRetentionCheck) }
        guard let next else { return -1 }
        let nanoseconds = max(0, next.nanoseconds - now.nanoseconds)
        return Int32(min((nanoseconds + 999_999) / 1_000_000, 60_000))
    }

    /// Whether a stream could be sent something now, so that poll must not sleep.
    private func hasPumpWork() -> Bool {
        guard let connection, connection.hasRoom else { return false }
        for target in streams.values {
            switch target {
            case .command(let command, let reader):
                if reader.credit > 0 && reader.sent < command.ring.end { return true }
                if command.exit != nil && reader.sent >= command.ring.end { return true }
            case .transfer(let transfer):
                if transfer.wantsPump { return true }
            }
        }
        return false
    }

    // MARK: The connection

    private func dial(now: MonotonicInstant) {
        switch connectUnixSocket(socketPath, nonBlocking: true) {
        case .success(let fd):
            let connection = LoopConnection(fd: fd)
            connection.send(.hello, 0, ControlHello(initVersion: corralInitVersion, key: key).encoded())
            self.connection = connection
            if !connection.flush() { dropConnection(now: now) }
        case .failure:
            redialAt = now.adding(seconds: backoff)
            backoff = min(backoff * 2, Self.longestBackoff)
        }
    }

    /// Whoever sent the commands is gone: stop those that were not started detached, and the
    /// streams of the others; redial.
    private func dropConnection(now: MonotonicInstant) {
        guard let connection else { return }
        for id in Array(streams.keys) { cancelStream(id, now: now) }
        streams = [:]
        connection.close()
        self.connection = nil
        if connection.welcomed {
            backoff = Self.shortestBackoff
            redialAt = now
        } else {
            // A connection the host refused must not turn into a loop of dials.
            redialAt = now.adding(seconds: backoff)
            backoff = min(backoff * 2, Self.longestBackoff)
        }
    }

    private func serveConnection(_ events: Int16, now: MonotonicInstant) {
        guard let connection else { return }
        if events & Int16(POLLOUT) != 0, !connection.flush() {
            dropConnection(now: now)
            return
        }
        guard events & Int16(POLLIN | POLLHUP | POLLERR) != 0 else { return }
        let open = connection.receive()
        frames: while self.connection === connection {
            switch connection.nextFrame() {
            case .incomplete:
                break frames
            case .malformed(let kind, let length):
                logLine("control connection: a frame of kind \(kind) and \(length) bytes; dropping the connection")
                dropConnection(now: now)
                return
            case .frame(let header, let payload):
                dispatch(header, payload, now: now)
            }
        }
        if !open && self.connection === connection { dropConnection(now: now) }
    }

    private func send<Payload: Collection<UInt8>>(_ kind: ControlFrameKind, _ id: UInt32, _ payload: Payload) {
        connection?.send(kind, id, payload)
    }

    private func fail(_ id: UInt32, _ failure: ControlFailure) {
        send(.failed, id, failure.encoded())
    }

    // MARK: Frames

    private func dispatch(_ header: ControlFrameHeader, _ payload: ArraySlice<UInt8>, now: MonotonicInstant) {
        let id = header.id
        switch header.kind {
        case .welcome:
            connection?.welcomed = true
        case .exec:
            exec(id, payload, now: now)
        case .cancel:
            cancelStream(id, now: now)
        case .input:
            input(id, payload, now: now)
        case .inputEnd:
            inputEnd(id, now: now)
        case .resize:
            if case .command(let command, _) = streams[id], let terminal = command.terminal,
                let size = WindowSize(decoding: payload)
            {
                _ = corral_set_window_size(terminal, UInt16(size.rows), UInt16(size.columns))
            }
        case .credit:
            guard let bytes = ControlCredit.decode(payload) else { return }
            switch streams[id] {
            case .command(_, let reader): reader.credit = min(reader.credit + bytes, ControlLimits.maxOutputWindow)
            case .transfer(let transfer): transfer.credit = min(transfer.credit + bytes, ControlLimits.maxOutputWindow)
            case nil: break
            }
        case .attach:
            attach(id, payload)
        case .signal:
            signal(id, payload)
        case .commands:
            guard streams[id] == nil else {
                return fail(id, ControlFailure(ControlFailure.Code.badRequest, "stream in use"))
            }
            let records = commands.values.sorted { ($0.startedMilliseconds, $0.id) < ($1.startedMilliseconds, $1.id) }
                .map { $0.record.encoded() }
            streams[id] = .transfer(ListingTransfer(stream: id, frames: records, credit: ControlLimits.outputWindow))
        case .file:
            file(id, payload)
        default:
            break
        }
    }

    private func exec(_ id: UInt32, _ payload: ArraySlice<UInt8>, now: MonotonicInstant) {
        guard streams[id] == nil else {
            return fail(id, ControlFailure(ControlFailure.Code.badRequest, "stream \(id) is in use"))
        }
        guard let request = ExecRequest(decoding: payload) else {
            return fail(id, ControlFailure(ControlFailure.Code.badRequest, "a malformed exec request"))
        }
        guard Self.isValidCommandID(request.commandID) else {
            return fail(
                id, ControlFailure(ControlFailure.Code.badRequest, "'\(request.commandID)' is not a command id"))
        }
        guard commands[request.commandID] == nil else {
            return fail(
                id, ControlFailure(ControlFailure.Code.exists, "a command \(request.commandID) exists already"))
        }
        guard byPID.count < ControlLimits.maxRunning else {
            return fail(
                id,
                ControlFailure(
                    ControlFailure.Code.limit, "\(ControlLimits.maxRunning) commands run already in this sandbox"))
        }
        let oomBefore = OOMCounter.read()
        let command: Command
        switch CommandSpawner.spawn(request, devNull: devNull) {
        case .success(let started):
            command = Command(
                id: request.commandID, pid: started.pid, arguments: request.arguments, detached: request.detached,
                grace: Double(request.graceMilliseconds) / 1000, terminal: started.terminal,
                outputs: started.outputs, stdinFD: started.stdinFD, oomBefore: oomBefore)
            if request.timeoutMilliseconds > 0 {
                command.timeoutDeadline = now.adding(seconds: Double(request.timeoutMilliseconds) / 1000)
            }
            byPID[started.pid] = command
        case .failure(.command(let message, let status)):
            command = Command(
                failedToStart: request.commandID, arguments: request.arguments, detached: request.detached,
                message: message, status: status)
        case .failure(.request(let failure)):
            return fail(id, failure)
        }
        commands[request.commandID] = command
        let reader = CommandReader(
            stream: id, owner: true, sent: 0, credit: min(max(request.outputWindow, 0), ControlLimits.maxOutputWindow),
            writesStdin: request.stdin)
        command.readers[id] = reader
        streams[id] = .command(command, reader)
        send(
            .started, id,
            StartedReport(pid: Int(command.pid), startedMilliseconds: command.startedMilliseconds).encoded())
    }

    /// The host's caller of this stream is gone (or the connection is): the stream ends, and
    /// a command its caller started, not detached, is stopped.
    private func cancelStream(_ id: UInt32, now: MonotonicInstant) {
        switch streams.removeValue(forKey: id) {
        case .command(let command, let reader):
            command.readers[id] = nil
            if reader.owner && !command.detached && command.exit == nil { command.terminateGroup(now: now) }
            if command.exit != nil && command.readers.isEmpty { command.ring.clear() }
        case .transfer(let transfer):
            transfer.abort()
        case nil:
            break
        }
    }

    private func input(_ id: UInt32, _ payload: ArraySlice<UInt8>, now: MonotonicInstant) {
        switch streams[id] {
        case .command(let command, let reader):
            guard reader.writesStdin, command.stdinFD >= 0, !command.stdinCloseRequested, !payload.isEmpty else {
                return
            }
            command.stdinBuffer.append(contentsOf: payload)
            command.stdinOwners.append((id, payload.count))
            writeStdin(command)
        case .transfer(let transfer):
            guard let connection else { return }
            if transfer.input(payload, connection) { streams[id] = nil }
        case nil:
            break
        }
    }

    private func inputEnd(_ id: UInt32, now: MonotonicInstant) {
        switch streams[id] {
        case .command(let command, let reader):
            guard reader.writesStdin, command.stdinFD >= 0, !command.stdinCloseRequested else { return }
            if command.terminal != nil {
                // A terminal has no end of input but the EOF character (^D), which ends the
                // input of a program that reads lines when it comes at a line's start.
                command.stdinBuffer.append(4)
            } else {
                command.stdinCloseRequested = true
            }
            writeStdin(command)
        case .transfer(let transfer):
            guard let connection else { return }
            if transfer.inputEnd(connection) { streams[id] = nil }
        case nil:
            break
        }
    }

    private func attach(_ id: UInt32, _ payload: ArraySlice<UInt8>) {
        guard streams[id] == nil else {
            return fail(id, ControlFailure(ControlFailure.Code.badRequest, "stream \(id) is in use"))
        }
        guard let request = AttachRequest(decoding: payload) else {
            return fail(id, ControlFailure(ControlFailure.Code.badRequest, "a malformed attach request"))
        }
        guard let command = commands[request.commandID] else {
            return fail(
                id,
                ControlFailure(ControlFailure.Code.unknownCommand, "no command \(request.commandID) in this sandbox"))
        }
        if let exit = command.exit {
            return fail(
                id,
                ControlFailure(
                    ControlFailure.Code.finished,
                    "command \(request.commandID) has finished, with status \(exit.status)\(exit.timedOut ? " (timed out)" : "")"
                ))
        }
        let start = min(max(request.offset, command.ring.start), command.ring.end)
        let dropped = max(0, command.ring.start - max(request.offset, 0))
        let reader = CommandReader(
            stream: id, owner: false, sent: start,
            credit: min(max(request.outputWindow, 0), ControlLimits.maxOutputWindow),
            writesStdin: request.stdin && command.stdinFD >= 0)
        command.readers[id] = reader
        streams[id] = .command(command, reader)
        send(.ready, id, AttachedReport(command: command.record, startOffset: start, dropped: dropped).encoded())
    }

    private func signal(_ id: UInt32, _ payload: ArraySlice<UInt8>) {
        guard let request = SignalRequest(decoding: payload) else {
            return fail(id, ControlFailure(ControlFailure.Code.badRequest, "a malformed signal request"))
        }
        guard let command = commands[request.commandID] else {
            return fail(
                id,
                ControlFailure(ControlFailure.Code.unknownCommand, "no command \(request.commandID) in this sandbox"))
        }
        if let exit = command.exit {
            return fail(
                id,
                ControlFailure(
                    ControlFailure.Code.finished,
                    "command \(request.commandID) has finished, with status \(exit.status)"))
        }
        guard command.pid > 0, kill(-command.pid, request.signal) == 0 else {
            let error = errno
            return fail(
                id,
                ControlFailure(
                    ControlFailure.Code.system, errno: error,
                    "cannot send signal \(request.signal) to command \(request.commandID)"))
        }
        send(.done, id, EmptyCollection<UInt8>())
    }

    private func file(_ id: UInt32, _ payload: ArraySlice<UInt8>) {
        guard streams[id] == nil else {
            return fail(id, ControlFailure(ControlFailure.Code.badRequest, "stream \(id) is in use"))
        }
        guard let request = FileRequest(decoding: payload) else {
            return fail(id, ControlFailure(ControlFailure.Code.badRequest, "a malformed file request"))
        }
        guard let connection else { return }
        if let transfer = FileOperations.start(request, stream: id, connection: connection) {
            streams[id] = .transfer(transfer)
        }
    }

    static func isValidCommandID(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= 64 else { return false }
        for (index, byte) in bytes.enumerated() {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): continue
            case UInt8(ascii: "-"), UInt8(ascii: "_"): if index == 0 { return false }
            default: return false
            }
        }
        return true
    }

    // MARK: Processes

    /// Reaps every child that has exited: a command's status is kept, an orphan's dropped.
    private func reap() {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            if pid > 0 {
                if let command = byPID.removeValue(forKey: pid) { command.status = WaitStatus(raw: status) }
                continue
            }
            if pid < 0 && errno == EINTR { continue }
            return
        }
    }

    /// Moves a command along: its timeout and kill deadlines while it runs; once it exited, the
    /// group's end, the last of its output, and its exit report.
    private func advance(_ command: Command, now: MonotonicInstant) {
        if let giveUp = command.giveUpDeadline, giveUp <= now, !command.groupGone {
            logLine("process group \(command.pid) still has members after SIGKILL; leaving them")
            command.groupGone = true
        }
        if let killAt = command.killDeadline, killAt <= now, command.giveUpDeadline == nil, !command.groupGone {
            kill(-command.pid, SIGKILL)
            command.giveUpDeadline = now.adding(seconds: 1)
        }
        if command.status == nil {
            // Only the command itself can time out: once it has exited, its status stands.
            if !command.timedOut, let deadline = command.timeoutDeadline, deadline <= now {
                command.timedOut = true
                command.terminateGroup(now: now)
            }
            return
        }
        if !command.groupGone {
            if let checkAt = command.groupCheckAt, now < checkAt { return }
            if command.groupAlive() {
                // What is left of its group is stopped too: a background process holding its
                // output open would keep the command from ending.
                command.terminateGroup(now: now)
                command.groupCheckAt = now.adding(seconds: Self.groupPollSeconds)
                return
            }
            command.groupGone = true
        }
        // The group is gone: read what is left in the pipes, without waiting for writers that
        // left the group on purpose (a daemon) and may hold them open for ever.
        var slot = 0
        while slot < command.outputs.count {
            let before = command.outputs.count
            readOutput(command, slot: slot, rounds: 64, draining: true)
            if command.outputs.count == before { slot += 1 }
        }
        if command.outputs.isEmpty { finish(command, now: now) }
    }

    /// Reads a command's output into its ring, `rounds` reads at most. Draining, a pipe with
    /// nothing in it is closed as if it had ended.
    private func readOutput(_ command: Command, slot: Int, rounds: Int, draining: Bool = false) {
        for _ in 0..<rounds {
            guard slot < command.outputs.count else { return }
            let room = roomFor(command)
            guard room > 0 else { return }
            let output = command.outputs[slot]
            let count = readBuffer.withUnsafeMutableBytes { raw in
                read(output.fd, raw.baseAddress, min(room, raw.count))
            }
            if count > 0 {
                command.ring.append(readBuffer[0..<count], from: output.source)
                if command.readers.isEmpty || command.ring.count > ControlLimits.ringCapacity {
                    command.ring.drop(
                        before: min(command.ring.end - Int64(ControlLimits.ringCapacity), command.lowestUnsent))
                }
                continue
            }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !draining { return }
            // The end (0; EIO on a terminal whose other side is closed), an error, or, draining,
            // nothing more there.
            if output.fd != command.terminal { close(output.fd) }
            command.outputs.remove(at: slot)
            return
        }
    }

    /// How much a command may read now: its ring's room, within what all rings may hold
    /// (rings nobody reads give way first; a command nobody reads drops its own oldest).
    private func roomFor(_ command: Command) -> Int {
        let room = min(command.room, readBuffer.count)
        guard room > 0 else { return 0 }
        var total = 0
        for other in commands.values { total += other.ring.count }
        var excess = total + room - ControlLimits.ringTotal
        guard excess > 0 else { return room }
        let others = commands.values.filter { $0 !== command }.sorted { lhs, rhs in
            (lhs.readers.isEmpty ? 0 : 1, -lhs.ring.count) < (rhs.readers.isEmpty ? 0 : 1, -rhs.ring.count)
        }
        for other in others where excess > 0 {
            let floor = other.readers.isEmpty ? other.ring.end : other.lowestUnsent
            let before = other.ring.count
            other.ring.drop(before: min(other.ring.start + Int64(excess), floor))
            excess -= before - other.ring.count
        }
        if excess <= 0 || command.readers.isEmpty { return room }
        return max(0, room - excess)
    }

    private func writeStdin(_ command: Command) {
        let fd = command.stdinFD
        guard fd >= 0 else { return }
        while !command.stdinBuffer.isEmpty {
            let written = command.stdinBuffer.withUnsafeBytes { raw in write(fd, raw.baseAddress, raw.count) }
            if written > 0 {
                command.stdinBuffer.removeFirst(written)
                credit(command, written)
                continue
            }
            if written < 0 && errno == EINTR { continue }
            if written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            // EPIPE and the like: the command closed its stdin. Later input is refused.
            for reader in command.readers.values where reader.writesStdin { send(.inputClosed, reader.stream, []) }
            command.closeStdin()
            return
        }
        for reader in command.readers.values where reader.pendingInputCredit > 0 {
            send(.inputCredit, reader.stream, ControlCredit.encode(reader.pendingInputCredit))
            reader.pendingInputCredit = 0
        }
        if command.stdinBuffer.isEmpty && command.stdinCloseRequested { command.closeStdin() }
    }

    /// Hands the stdin credit of `count` written bytes back to the streams that sent them.
    private func credit(_ command: Command, _ count: Int) {
        var left = count
        while left > 0, !command.stdinOwners.isEmpty {
            let taken = min(left, command.stdinOwners[0].count)
            command.readers[command.stdinOwners[0].stream]?.pendingInputCredit += taken
            command.stdinOwners[0].count -= taken
            if command.stdinOwners[0].count == 0 { command.stdinOwners.removeFirst() }
            left -= taken
        }
    }

    /// The command's group is gone and its output read: its exit report is made, and readers
    /// get it once they have the rest.
    private func finish(_ command: Command, now: MonotonicInstant) {
        var outOfMemory = false
        if let before = command.oomBefore, let after = OOMCounter.read(), after > before {
            outOfMemory = true
            let line =
                "corral-init: \(OOMCounter.marker) the kernel killed \(after - before) process(es) in this sandbox "
                + "while the command ran: the sandbox's memory limit was reached\n"
            command.ring.append(Array(line.utf8)[...], from: .stderr)
        }
        let status = command.timedOut ? 124 : Int(command.status?.shellStatus ?? 125)
        command.exit = ExitReport(
            status: status, timedOut: command.timedOut, outOfMemory: outOfMemory,
            endedMilliseconds: corral_wall_milliseconds(), outputEnd: command.ring.end)
        command.endedAt = now
        command.closeAll()
        if command.readers.isEmpty { command.ring.clear() }
    }

    // MARK: Sending

    /// Sends what streams have credit for, a frame per stream at a time so that none waits
    /// behind another, while the connection's outgoing buffer has room.
    private func pump() {
        guard let connection else { return }
        var progress = true
        while progress && connection.hasRoom {
            progress = false
            for (id, target) in streams {
                guard connection.hasRoom else { break }
                switch target {
                case .command(let command, let reader):
                    if reader.credit > 0,
                        let (source, bytes) = command.ring.read(from: reader.sent, limit: min(reader.credit, 60 << 10))
                    {
                        connection.send(source == .stdout ? .stdout : .stderr, id, bytes)
                        reader.sent += Int64(bytes.count)
                        reader.credit -= bytes.count
                        progress = true
                    }
                    if let exit = command.exit, reader.sent >= command.ring.end {
                        connection.send(.exit, id, exit.encoded())
                        command.readers[id] = nil
                        streams[id] = nil
                        if command.readers.isEmpty { command.ring.clear() }
                    }
                case .transfer(let transfer):
                    if transfer.wantsPump {
                        if transfer.pump(connection) { streams[id] = nil }
                        progress = true
                    }
                }
            }
        }
        // With readers, the ring keeps its capacity's worth of the newest output.
        for command in commands.values where !command.readers.isEmpty && command.ring.count > ControlLimits.ringCapacity
        {
            command.ring.drop(before: min(command.ring.end - Int64(ControlLimits.ringCapacity), command.lowestUnsent))
        }
    }

    /// Forgets ended commands nobody reads once they are old, or too many.
    private func retain(now: MonotonicInstant) {
        nextRetentionCheck = now.adding(seconds: 5)
        let ended = commands.values.filter { $0.exit != nil && $0.readers.isEmpty }
            .sorted { ($0.endedAt ?? now) < ($1.endedAt ?? now) }
        let excess = ended.count - ControlLimits.maxEndedKept
        for (index, command) in ended.enumerated() {
            let old = (command.endedAt ?? now).adding(seconds: Double(ControlLimits.endedRetentionSeconds)) <= now
            if index < excess || old { commands[command.id] = nil }
        }
    }
}
