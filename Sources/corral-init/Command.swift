import CCorralInit
import ControlProtocol
import Glibc

/// One command that PID 1 started for the control connection: its process (the leader of a
/// session and process group of its own), the descriptors of its output and stdin, its ring
/// of recent output, and who reads it. Owned by the control loop's thread.
final class Command {
    let id: String
    let pid: pid_t
    let arguments: [String]
    let startedMilliseconds: Int64
    let detached: Bool
    let grace: Double
    /// The terminal's primary side, when it runs on one (output and stdin both).
    let terminal: Int32?

    /// Output descriptors still open, with the stream each is.
    var outputs: [(fd: Int32, source: OutputRing.Source)]
    /// Where stdin goes (a pipe, or the terminal); -1 once closed or when there is none.
    var stdinFD: Int32
    var stdinBuffer: [UInt8] = []
    /// Whose bytes `stdinBuffer` holds, in order, so that each stream gets its credit back.
    var stdinOwners: [(stream: UInt32, count: Int)] = []
    var stdinCloseRequested = false
    var ring = OutputRing()
    /// Streams that read this command, by stream id.
    var readers: [UInt32: CommandReader] = [:]

    let oomBefore: Int?
    var timeoutDeadline: MonotonicInstant?
    /// SIGKILL the group once this passes.
    var killDeadline: MonotonicInstant?
    /// After SIGKILL, stop waiting for stragglers once this passes.
    var giveUpDeadline: MonotonicInstant?
    /// When to look again whether the group is empty (orphans do not always announce it).
    var groupCheckAt: MonotonicInstant?
    var timedOut = false
    /// The command's own wait status, once reaped.
    var status: WaitStatus?
    /// Whether no live process is left in the group (or we stopped waiting).
    var groupGone = false
    /// How it ended, once its group is gone and its output read.
    var exit: ExitReport?
    var endedAt: MonotonicInstant?

    init(
        id: String, pid: pid_t, arguments: [String], detached: Bool, grace: Double, terminal: Int32?,
        outputs: [(fd: Int32, source: OutputRing.Source)], stdinFD: Int32, oomBefore: Int?
    ) {
        self.id = id
        self.pid = pid
        self.arguments = arguments
        self.startedMilliseconds = corral_wall_milliseconds()
        self.detached = detached
        self.grace = grace
        self.terminal = terminal
        self.outputs = outputs
        self.stdinFD = stdinFD
        self.oomBefore = oomBefore
    }

    /// A command that never ran: its output is the reason, its status 126 or 127, as the exec
    /// wrapper reports them, so that both ways of running a command end alike.
    init(failedToStart id: String, arguments: [String], detached: Bool, message: String, status: Int) {
        self.id = id
        self.pid = 0
        self.arguments = arguments
        self.startedMilliseconds = corral_wall_milliseconds()
        self.detached = detached
        self.grace = 0
        self.terminal = nil
        self.outputs = []
        self.stdinFD = -1
        self.oomBefore = nil
        ring.append(Array("corral-init: \(message)\n".utf8)[...], from: .stderr)
        groupGone = true
        exit = ExitReport(
            status: status, timedOut: false, outOfMemory: false, endedMilliseconds: startedMilliseconds,
            outputEnd: ring.end)
        endedAt = .now()
    }

    var isRunning: Bool { exit == nil }

    /// The lowest offset some reader has yet to be sent: the ring may not drop past it.
    var lowestUnsent: Int64 {
        readers.values.map(\.sent).min() ?? ring.end
    }

    /// Bytes the ring may take now without dropping anything a reader still needs.
    var room: Int {
        guard !readers.isEmpty else { return ControlLimits.ringCapacity }
        return max(0, ControlLimits.ringCapacity - Int(ring.end - lowestUnsent))
    }

    /// What `commands` and `attach` say about it.
    var record: CommandRecord {
        var listed: [String] = []
        var budget = ControlLimits.maxListedArgumentBytes
        for argument in arguments {
            guard budget > 0 else { break }
            let kept = String(decoding: argument.utf8.prefix(budget), as: UTF8.self)
            listed.append(kept)
            budget -= kept.utf8.count
        }
        return CommandRecord(
            commandID: id, pid: Int(pid), arguments: listed, startedMilliseconds: startedMilliseconds, exit: exit,
            detached: detached, terminal: terminal != nil, stdinOpen: stdinFD >= 0 && !stdinCloseRequested,
            outputEnd: ring.end, retainedStart: ring.start)
    }

    /// SIGTERM to the group (and SIGCONT, since a stopped process cannot act on it), then
    /// SIGKILL once the grace has passed.
    func terminateGroup(now: MonotonicInstant) {
        guard killDeadline == nil, pid > 0, !groupGone else { return }
        kill(-pid, SIGTERM)
        kill(-pid, SIGCONT)
        killDeadline = now.adding(seconds: grace)
    }

    /// Whether a live process is left in the group. A killed orphan stays a zombie (and a
    /// member, for kill(2)) until it is reaped, which PID 1 does at once; zombies whose parent
    /// lives on are looked past in /proc.
    func groupAlive() -> Bool {
        guard pid > 0 else { return false }
        if kill(-pid, 0) != 0 && errno != EPERM { return false }
        return ProcessTable.hasLiveMember(ofGroup: pid) ?? true
    }

    func closeStdin() {
        if stdinFD >= 0 && stdinFD != terminal { close(stdinFD) }
        stdinFD = -1
        stdinBuffer = []
        stdinOwners = []
    }

    /// Closes every descriptor; the command is over.
    func closeAll() {
        closeStdin()
        for output in outputs where output.fd != terminal { close(output.fd) }
        outputs = []
        if let terminal { close(terminal) }
    }
}

/// A stream that reads a command: the one that started it (`owner`), or an attach.
final class CommandReader {
    let stream: UInt32
    let owner: Bool
    /// The next offset to send.
    var sent: Int64
    /// Output bytes the host will still take.
    var credit: Int
    /// Whether it may write to the command's stdin.
    let writesStdin: Bool
    /// Input credit to give back once it adds up.
    var pendingInputCredit = 0

    init(stream: UInt32, owner: Bool, sent: Int64, credit: Int, writesStdin: Bool) {
        self.stream = stream
        self.owner = owner
        self.sent = sent
        self.credit = credit
        self.writesStdin = writesStdin
    }
}
