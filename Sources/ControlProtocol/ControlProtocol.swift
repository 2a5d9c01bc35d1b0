// The control connection's wire format, shared by its two ends: corral-init inside the
// sandbox (Glibc only, linked static) and `ControlChannels` on the host. Pure Swift, no
// Foundation, so that corral-init can link it.
//
// Frames, both ways: kind (1 byte), id (4 bytes, big-endian), payload length (4 bytes,
// big-endian), payload. The id names a stream, chosen by the host, one per request: an
// `exec`, an `attach`, a `file` operation, a `signal` or a `commands` listing. Id 0 is the
// connection's own (hello, welcome). Payloads other than raw bytes are `ControlFields`:
// length-prefixed fields, laid out by the types in `ControlMessages.swift`.
//
// Host to sandbox:
//   exec      an `ExecRequest`: start a command (its `CommandID` is chosen by the host)
//   cancel    the caller of this stream has gone: stop streaming, and stop the command too
//             unless it was started detached; abandon a file operation
//   welcome   the hello was accepted (payload: the protocol version in decimal)
//   input     bytes for the command's stdin, or for a file being written (within credit)
//   inputEnd  close the command's stdin (EOF; on a terminal, ^D), or end of a file's bytes
//   resize    a terminal's new size (`WindowSize`)
//   credit    4 bytes: the host takes that many more output bytes on this stream
//   attach    an `AttachRequest`: stream a running command's output from an offset
//   signal    a `SignalRequest`
//   commands  list the commands corral-init keeps (running, and ended for a while)
//   file      a `FileRequest`: stat, list, read, write, mkdir, remove, rename, symlink,
//             tar out of a path or unpack a tar into a directory
// Sandbox to host:
//   hello     a `ControlHello` (id 0)
//   stdout, stderr   output, in order; a terminal's output is stdout
//   exit      an `ExitReport`: the command ended and all its output was sent
//   failed    a `ControlFailure`: the request failed (the stream is over)
//   started   a `StartedReport`: the command runs (answers exec)
//   inputCredit  4 bytes: corral-init takes that many more input bytes on this stream
//   ready     answers attach (`AttachedReport`), read (`FileStatus`), write and unpack
//   data      a file's bytes, a tar's bytes, a listing's entries
//   done      the request succeeded (payload as the request says); the stream is over
//   inputClosed  the command closed its stdin: later input is refused
//
// Flow control (protocol 3). Each stream has its own window each way, so that a reader
// that stops reading stalls its own command and nothing else:
// - Output: the request names the stream's window (`outputWindow`, at most
//   `ControlLimits.maxOutputWindow`); corral-init sends no more output or data bytes than it
//   was granted, and the host grants more (`credit`) as its caller consumes. A stream that
//   exceeds its window breaks the protocol, and the host closes the connection. The host
//   keeps the windows of all streams of one connection within a budget.
// - Input: corral-init grants `ControlLimits.inputWindow` bytes to every stream that takes
//   input (an exec with stdin, an attach with stdin, a write or an unpack) and more
//   (`inputCredit`) as it writes them out.
// - corral-init keeps each command's recent output in a ring of `ControlLimits.ringCapacity`
//   bytes (and all commands' within `ControlLimits.ringTotal`), addressed by byte offsets
//   from the command's start: an attach replays from an offset what is still there, and says
//   how much was dropped before it. While a stream reads a command, the command waits for it
//   once the ring is full; a command nobody reads (detached) runs on, and its oldest output
//   is dropped.
//
// Authentication (since protocol 2). The host's socket is reachable by every process in the
// sandbox, so the connection must prove it is corral-init, PID 1:
// - When the host starts listening for a new sandbox it makes a `ControlKey` (32 random
//   bytes), keeps it host-side (`control.secret`, 0600, outside the mounted directory) and
//   puts a copy, `control.key`, beside the socket. corral-init makes itself undumpable
//   (PR_SET_DUMPABLE 0, so the sandbox's user can neither trace it nor read its memory
//   through /proc/1; under runc not its environment or descriptors either), reads the key
//   once at boot, before anything else runs in the sandbox, and sends it in its hello; the
//   key is never in the environment or on a command line. The host compares it in constant
//   time, answers `welcome`, and deletes `control.key` once the first hello is accepted (or
//   once it stops waiting for one), so that no later process finds it. A process that adopts
//   the sandbox after a restart reads `control.secret` and authenticates corral-init's redial
//   with it.
// - The first frame must be a hello of at most `ControlHello.maxPayload` bytes, within a few
//   seconds; anything else (a larger frame, another kind, a wrong key, silence) is refused:
//   the host stops reading and closes the connection at the deadline. A second hello never
//   displaces a live connection that already said one.
// - Frames from the sandbox carry at most `ControlFrameHeader.maxSandboxPayload` bytes.
// A hello of another protocol is refused (the host logs the version mismatch), and that
// sandbox's commands go through the engine's exec.
//
// When the connection drops, corral-init stops the commands that were not started detached
// and keeps the others running; it redials, and the host that answers (the same process, or
// one that adopted the sandbox) lists and attaches them anew.

public enum ControlFrameKind: UInt8, Sendable, CaseIterable {
    // Host to sandbox.
    case exec = 1
    case cancel = 2
    case welcome = 3
    case input = 4
    case inputEnd = 5
    case resize = 6
    case credit = 7
    case attach = 8
    case signal = 9
    case commands = 10
    case file = 11
    // Sandbox to host.
    case hello = 16
    case stdout = 17
    case stderr = 18
    case exit = 19
    case failed = 20
    case started = 21
    case inputCredit = 22
    case ready = 23
    case data = 24
    case done = 25
    case inputClosed = 26

    /// Whether the sandbox sends this kind (the host sends the others).
    public var fromSandbox: Bool { rawValue >= 16 }

    /// Whether the payload counts against the stream's output window.
    public var countsAgainstWindow: Bool { self == .stdout || self == .stderr || self == .data }
}

public struct ControlFrameHeader: Sendable, Equatable {
    public static let size = 9
    /// The largest payload either end sends or accepts: an `exec` with its environment.
    public static let maxPayload = 4 << 20
    /// The largest payload the host accepts from the sandbox (corral-init sends output in
    /// chunks of at most this size), so that a connection never holds a large frame.
    public static let maxSandboxPayload = 64 << 10

    /// Nil for a kind this version does not know.
    public var kind: ControlFrameKind?
    public var rawKind: UInt8
    public var id: UInt32
    public var length: Int

    public init(_ kind: ControlFrameKind, id: UInt32, length: Int) {
        self.kind = kind
        self.rawKind = kind.rawValue
        self.id = id
        self.length = length
    }

    /// Reads the first `size` bytes of `bytes`; nil when there are fewer.
    public init?<Bytes: Collection<UInt8>>(parsing bytes: Bytes) {
        guard bytes.count >= Self.size else { return nil }
        var index = bytes.startIndex
        func next() -> UInt8 {
            defer { index = bytes.index(after: index) }
            return bytes[index]
        }
        rawKind = next()
        kind = ControlFrameKind(rawValue: rawKind)
        var id: UInt32 = 0
        for _ in 0..<4 { id = id << 8 | UInt32(next()) }
        var length: UInt32 = 0
        for _ in 0..<4 { length = length << 8 | UInt32(next()) }
        self.id = id
        self.length = Int(length)
    }

    /// Whether a peer may act on the frame: a known kind and a payload within the limit.
    public var isValid: Bool { kind != nil && length <= Self.maxPayload }

    public var bytes: [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(Self.size)
        append(to: &result)
        return result
    }

    public func append(to buffer: inout [UInt8]) {
        buffer.append(rawKind)
        for value in [id, UInt32(truncatingIfNeeded: length)] {
            for shift in stride(from: 24, through: 0, by: -8) {
                buffer.append(UInt8(truncatingIfNeeded: value >> shift))
            }
        }
    }
}

/// The numbers both ends agree on.
public enum ControlLimits {
    /// The output window a host grants a stream when it has the budget for it.
    public static let outputWindow = 256 << 10
    /// The largest window a request may ask for.
    public static let maxOutputWindow = 4 << 20
    /// The input a stream may have in flight to corral-init before it grants more.
    public static let inputWindow = 256 << 10
    /// A command's ring of recent output.
    public static let ringCapacity = 1 << 20
    /// All commands' rings together; past it, the largest rings (ended commands' first) shrink.
    public static let ringTotal = 16 << 20
    /// Commands running at once (the sandbox's pids limit usually says less).
    public static let maxRunning = 1024
    /// Ended commands kept for `commands` and their status; the oldest go first.
    public static let maxEndedKept = 128
    /// How long an ended command is kept.
    public static let endedRetentionSeconds = 600
    /// The largest terminal a command may ask for.
    public static let maxTerminalRows = 1000
    public static let maxTerminalColumns = 2000
    /// The most of a command's arguments a listing carries.
    public static let maxListedArgumentBytes = 4096
}

/// Credit frames carry a 4-byte big-endian count.
public enum ControlCredit {
    public static func encode(_ bytes: Int) -> [UInt8] {
        let value = UInt32(clamping: max(bytes, 0))
        return [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: value >> $0) }
    }

    public static func decode<Bytes: Collection<UInt8>>(_ payload: Bytes) -> Int? {
        guard payload.count == 4 else { return nil }
        return Int(payload.reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
    }
}
