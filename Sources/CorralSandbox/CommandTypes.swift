import CorralCore
import DockerEngine
import Foundation

/// A terminal's size in character cells, for a command started on one.
public struct TerminalSize: Sendable, Hashable, Codable {
    public var rows: Int
    public var columns: Int

    public init(rows: Int, columns: Int) {
        self.rows = rows
        self.columns = columns
    }

    /// The most rows and columns a sandbox's terminal may have: past them a program that
    /// draws the screen would be asked to hold absurd buffers.
    public static let maxRows = 1000
    public static let maxColumns = 2000

    /// Throws unless both are within 1...`maxRows` and 1...`maxColumns`.
    public func validated() throws -> TerminalSize {
        guard (1...Self.maxRows).contains(rows), (1...Self.maxColumns).contains(columns) else {
            throw CorralError.invalidArgument(
                "a terminal of \(rows) rows and \(columns) columns is out of range",
                hint: "rows must be 1 to \(Self.maxRows), columns 1 to \(Self.maxColumns)")
        }
        return self
    }
}

/// A signal to send to a command, by number (Linux's) or by name (`TERM`, `SIGTERM`, `kill`).
public struct CommandSignal: Sendable, Hashable, CustomStringConvertible {
    public let number: Int32

    public static let hangup = CommandSignal(unchecked: 1)
    public static let interrupt = CommandSignal(unchecked: 2)
    public static let quit = CommandSignal(unchecked: 3)
    public static let kill = CommandSignal(unchecked: 9)
    public static let terminate = CommandSignal(unchecked: 15)
    public static let `continue` = CommandSignal(unchecked: 18)
    public static let stop = CommandSignal(unchecked: 19)
    public static let windowChange = CommandSignal(unchecked: 28)

    /// Linux's names, without the SIG prefix, by number.
    static let names: [Int32: String] = [
        1: "HUP", 2: "INT", 3: "QUIT", 4: "ILL", 5: "TRAP", 6: "ABRT", 7: "BUS", 8: "FPE", 9: "KILL", 10: "USR1",
        11: "SEGV", 12: "USR2", 13: "PIPE", 14: "ALRM", 15: "TERM", 16: "STKFLT", 17: "CHLD", 18: "CONT", 19: "STOP",
        20: "TSTP", 21: "TTIN", 22: "TTOU", 23: "URG", 24: "XCPU", 25: "XFSZ", 26: "VTALRM", 27: "PROF", 28: "WINCH",
        29: "IO", 30: "PWR", 31: "SYS",
    ]
    static let aliases: [String: Int32] = ["IOT": 6, "CLD": 17, "POLL": 29, "RTMIN": 34, "RTMAX": 64]

    private init(unchecked number: Int32) { self.number = number }

    /// A signal by number, 1 to 64.
    public init(number: Int32) throws {
        guard (1...64).contains(number) else {
            throw CorralError.invalidArgument(
                "signal \(number) does not exist", hint: "give a signal from 1 to 64, or a name such as TERM or KILL")
        }
        self.number = number
    }

    /// A signal by name (`TERM`, `SIGTERM`, `term`, `RTMIN+2`) or number (`15`).
    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let number = Int32(trimmed) {
            try self.init(number: number)
            return
        }
        var name = trimmed.uppercased()
        if name.hasPrefix("SIG") { name.removeFirst(3) }
        if let found = Self.names.first(where: { $0.value == name })?.key ?? Self.aliases[name] {
            self.init(unchecked: found)
            return
        }
        for base in ["RTMIN", "RTMAX"] where name.hasPrefix(base + "+") || name.hasPrefix(base + "-") {
            if let offset = Int32(name.dropFirst(base.count)), let start = Self.aliases[base] {
                try self.init(number: start + offset)
                return
            }
        }
        throw CorralError.invalidArgument(
            "'\(text)' is not a signal", hint: "give a name such as TERM, KILL, INT or HUP, or a number from 1 to 64")
    }

    /// `SIGTERM`, or the number for signals without a name of their own.
    public var description: String { Self.names[number].map { "SIG" + $0 } ?? "signal \(number)" }
}

/// A piece of a command's output: which stream, and where it starts in the command's output
/// (stdout and stderr count as one sequence of bytes, in the order corral-init read them; a
/// terminal's output is all stdout).
public struct CommandOutputChunk: Sendable, Hashable {
    public var stream: StdioStream
    /// The byte offset of `bytes[0]` since the command started.
    public var offset: Int64
    public var bytes: [UInt8]

    public init(stream: StdioStream, offset: Int64, bytes: [UInt8]) {
        self.stream = stream
        self.offset = offset
        self.bytes = bytes
    }
}

/// A command as corral-init keeps it: running, or ended a short while ago.
public struct CommandInfo: Sendable, Hashable, Codable {
    public enum State: String, Sendable, Codable {
        case running
        case exited
    }

    public var id: CommandID
    /// Its pid inside the sandbox (0 for a command that could not start).
    public var pid: Int
    /// Its arguments, cut at 4 KiB in all.
    public var arguments: [String]
    public var state: State
    public var started: Date
    public var ended: Date?
    /// How it ended, once it has.
    public var status: CommandStatus?
    /// Whether it outlives its caller and the control connection.
    public var detached: Bool
    public var terminal: Bool
    /// The offset just past its last output byte, and the first offset still kept for an
    /// attach (what came before it was dropped).
    public var outputEnd: Int64
    public var retainedStart: Int64
}
