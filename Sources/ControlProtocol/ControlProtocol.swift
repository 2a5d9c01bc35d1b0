// The control connection's wire format, shared by its two ends: corral-init inside the
// sandbox (Glibc only, linked static) and `ControlChannels` on the host. Pure Swift, no
// Foundation, so that corral-init can link it.
//
// Frames, both ways: kind (1 byte), id (4 bytes, big-endian), payload length (4 bytes,
// big-endian), payload. Host to sandbox: `welcome` (the hello was accepted), `exec` (an
// `ExecRequest`) and `kill`. Sandbox to host: `hello` (a `ControlHello`, id 0), `stdout` and
// `stderr` (bytes as they come), `exit` (the status in decimal) and `failed` (why the command
// could not be started).
//
// Protocol 2 (this one). The host's socket is reachable by every process in the sandbox, so
// the connection must prove it is corral-init, PID 1:
// - When the host starts listening for a new sandbox it makes a `ControlKey` (32 random
//   bytes), keeps it host-side (`control.secret`, 0600, outside the mounted directory) and
//   puts a copy, `control.key`, beside the socket. corral-init makes itself undumpable
//   (PR_SET_DUMPABLE 0, so the sandbox's user can neither trace it nor read its memory
//   through /proc/1; under runc not its environment or descriptors either), reads the key
//   once at boot, before anything else runs in the sandbox, and sends it in its hello; the
//   key is never in the environment or on a command line. The host compares it in constant time, answers
//   `welcome`, and deletes `control.key` once the first hello is accepted (or once it stops
//   waiting for one), so that no later process finds it. A process that adopts the sandbox
//   after a restart reads `control.secret` and authenticates corral-init's redial with it.
// - The first frame must be a hello of at most `ControlHello.maxPayload` bytes, within a few
//   seconds; anything else (a larger frame, another kind, a wrong key, silence) is refused:
//   the host stops reading and closes the connection at the deadline. A second hello never
//   displaces a live connection that already said one.
// - Frames from the sandbox carry at most `ControlFrameHeader.maxSandboxPayload` bytes.
// Protocol 1 sent corral-init's version string as the hello and nothing else: such a hello is
// refused (the host logs the version mismatch), and that sandbox's commands go through the
// engine's exec.

public enum ControlFrameKind: UInt8, Sendable {
    case exec = 1
    case kill = 2
    case welcome = 3
    case hello = 16
    case stdout = 17
    case stderr = 18
    case exit = 19
    case failed = 20
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
        let header = Array(bytes.prefix(Self.size))
        rawKind = header[0]
        kind = ControlFrameKind(rawValue: rawKind)
        id = Self.bigEndian(header[1...4])
        length = Int(Self.bigEndian(header[5...8]))
    }

    /// Whether a peer may act on the frame: a known kind and a payload within the limit.
    public var isValid: Bool { kind != nil && length <= Self.maxPayload }

    public var bytes: [UInt8] {
        var result: [UInt8] = [rawKind]
        for value in [id, UInt32(truncatingIfNeeded: length)] {
            for shift in stride(from: 24, through: 0, by: -8) {
                result.append(UInt8(truncatingIfNeeded: value >> shift))
            }
        }
        return result
    }

    private static func bigEndian(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        bytes.reduce(0) { $0 << 8 | UInt32($1) }
    }
}

/// What an `exec` frame carries: NUL-separated fields, the timeout in ms (0 for none), the
/// grace between SIGTERM and SIGKILL in ms, the working directory, the argument count, the
/// arguments, then `KEY=VALUE` pairs that override the sandbox's environment.
public struct ExecRequest: Sendable, Equatable {
    public var timeoutMilliseconds: UInt64
    public var graceMilliseconds: UInt64
    public var workingDirectory: String
    public var arguments: [String]
    public var environment: [String]

    public init(
        timeoutMilliseconds: UInt64, graceMilliseconds: UInt64, workingDirectory: String, arguments: [String],
        environment: [String]
    ) {
        self.timeoutMilliseconds = timeoutMilliseconds
        self.graceMilliseconds = graceMilliseconds
        self.workingDirectory = workingDirectory
        self.arguments = arguments
        self.environment = environment
    }

    /// The payload; nil when a field holds a NUL byte, which no argument or variable can.
    public func encoded() -> [UInt8]? {
        let fields =
            [String(timeoutMilliseconds), String(graceMilliseconds), workingDirectory, String(arguments.count)]
            + arguments + environment
        guard !fields.contains(where: { $0.utf8.contains(0) }) else { return nil }
        var payload: [UInt8] = []
        for (index, field) in fields.enumerated() {
            if index > 0 { payload.append(0) }
            payload += field.utf8
        }
        return payload
    }

    public init?(decoding payload: [UInt8]) {
        let fields = payload.split(separator: 0, omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self)
        }
        guard fields.count >= 4, let timeout = UInt64(fields[0]), let grace = UInt64(fields[1]),
            let count = Int(fields[3]), count >= 1, fields.count >= 4 + count
        else { return nil }
        self.init(
            timeoutMilliseconds: timeout, graceMilliseconds: grace, workingDirectory: fields[2],
            arguments: Array(fields[4..<(4 + count)]), environment: Array(fields[(4 + count)...]))
    }
}
