/// What an `exec` frame carries (protocol 3), as `ControlFields`: the command's id, its
/// arguments and environment overrides (`KEY=VALUE`), working directory, timeout and grace in
/// milliseconds (0: no timeout), whether stdin stays open, whether it outlives its caller,
/// the terminal it asks for (rows 0: none), and the stream's output window.
public struct ExecRequest: Sendable, Equatable {
    public var commandID: String
    public var arguments: [String]
    public var environment: [String]
    public var workingDirectory: String
    public var timeoutMilliseconds: UInt64
    public var graceMilliseconds: UInt64
    public var stdin: Bool
    public var detached: Bool
    public var terminal: WindowSize?
    public var outputWindow: Int

    public init(
        commandID: String, arguments: [String], environment: [String] = [], workingDirectory: String,
        timeoutMilliseconds: UInt64 = 0, graceMilliseconds: UInt64 = 2000, stdin: Bool = false, detached: Bool = false,
        terminal: WindowSize? = nil, outputWindow: Int = ControlLimits.outputWindow
    ) {
        self.commandID = commandID
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.timeoutMilliseconds = timeoutMilliseconds
        self.graceMilliseconds = graceMilliseconds
        self.stdin = stdin
        self.detached = detached
        self.terminal = terminal
        self.outputWindow = outputWindow
    }

    /// The payload; nil when a string holds a NUL byte, which no argument, variable or path
    /// can.
    public func encoded() -> [UInt8]? {
        let strings = [commandID, workingDirectory] + arguments + environment
        guard !strings.contains(where: { $0.utf8.contains(0) }) else { return nil }
        var writer = ControlFieldWriter()
        writer.append(commandID)
        writer.append(arguments)
        writer.append(environment)
        writer.append(workingDirectory)
        writer.append(timeoutMilliseconds)
        writer.append(graceMilliseconds)
        writer.append(stdin)
        writer.append(detached)
        writer.append(UInt64(terminal?.rows ?? 0))
        writer.append(UInt64(terminal?.columns ?? 0))
        writer.append(outputWindow)
        return writer.bytes
    }

    /// Nil for a payload of another shape, no arguments, or strings holding NUL bytes.
    public init?<Payload: Collection<UInt8>>(decoding payload: Payload) {
        var reader = ControlFieldReader(payload)
        guard let commandID = reader.string(), let arguments = reader.strings(), !arguments.isEmpty,
            let environment = reader.strings(), let workingDirectory = reader.string(),
            let timeout = reader.uint64(), let grace = reader.uint64(), let stdin = reader.bool(),
            let detached = reader.bool(), let rows = reader.uint64(), let columns = reader.uint64(),
            let window = reader.int(), reader.isAtEnd
        else { return nil }
        let strings = [commandID, workingDirectory] + arguments + environment
        guard !strings.contains(where: { $0.utf8.contains(0) }) else { return nil }
        var terminal: WindowSize?
        if rows != 0 || columns != 0 {
            guard let size = WindowSize(rows: Int(clamping: rows), columns: Int(clamping: columns)) else {
                return nil
            }
            terminal = size
        }
        self.init(
            commandID: commandID, arguments: arguments, environment: environment, workingDirectory: workingDirectory,
            timeoutMilliseconds: timeout, graceMilliseconds: grace, stdin: stdin, detached: detached,
            terminal: terminal, outputWindow: window)
    }
}

/// A terminal's size in character cells, within `ControlLimits`.
public struct WindowSize: Sendable, Hashable {
    public var rows: Int
    public var columns: Int

    /// Nil for a size of zero, or past `ControlLimits.maxTerminalRows` and `maxTerminalColumns`.
    public init?(rows: Int, columns: Int) {
        guard Self.problem(rows: rows, columns: columns) == nil else { return nil }
        self.rows = rows
        self.columns = columns
    }

    /// What is wrong with a size, or nil when nothing is.
    public static func problem(rows: Int, columns: Int) -> String? {
        guard (1...ControlLimits.maxTerminalRows).contains(rows),
            (1...ControlLimits.maxTerminalColumns).contains(columns)
        else {
            return "a terminal of \(rows) rows and \(columns) columns is out of range: rows must be 1 to "
                + "\(ControlLimits.maxTerminalRows), columns 1 to \(ControlLimits.maxTerminalColumns)"
        }
        return nil
    }

    public func encoded() -> [UInt8] {
        var writer = ControlFieldWriter()
        writer.append(UInt64(rows))
        writer.append(UInt64(columns))
        return writer.bytes
    }

    public init?<Payload: Collection<UInt8>>(decoding payload: Payload) {
        var reader = ControlFieldReader(payload)
        guard let rows = reader.uint64(), let columns = reader.uint64(), reader.isAtEnd else { return nil }
        self.init(rows: Int(clamping: rows), columns: Int(clamping: columns))
    }
}

/// Answers an `exec`: the command runs, as `pid`, since `startedMilliseconds` (wall clock).
public struct StartedReport: Sendable, Equatable {
    public var pid: Int
    public var startedMilliseconds: Int64

    public init(pid: Int, startedMilliseconds: Int64) {
        self.pid = pid
        self.startedMilliseconds = startedMilliseconds
    }

    public func encoded() -> [UInt8] {
        var writer = ControlFieldWriter()
        writer.append(pid)
        writer.append(startedMilliseconds)
        return writer.bytes
    }

    public init?<Payload: Collection<UInt8>>(decoding payload: Payload) {
        var reader = ControlFieldReader(payload)
        guard let pid = reader.int(), let started = reader.int64(), reader.isAtEnd else { return nil }
        self.init(pid: pid, startedMilliseconds: started)
    }
}

/// How a command ended: the status a shell would report (the exit code, or 128 plus the
/// signal; 124 after its timeout), whether the timeout ended it, whether the kernel's
/// out-of-memory killer struck in the sandbox while it ran, and when (wall clock).
public struct ExitReport: Sendable, Equatable {
    public var status: Int
    public var timedOut: Bool
    public var outOfMemory: Bool
    public var endedMilliseconds: Int64
    /// The offset just past its last output byte.
    public var outputEnd: Int64

    public init(status: Int, timedOut: Bool, outOfMemory: Bool, endedMilliseconds: Int64, outputEnd: Int64) {
        self.status = status
        self.timedOut = timedOut
        self.outOfMemory = outOfMemory
        self.endedMilliseconds = endedMilliseconds
        self.outputEnd = outputEnd
    }

    public func encoded() -> [UInt8] {
        var writer = ControlFieldWriter()
        writer.append(status)
        writer.append(timedOut)
        writer.append(outOfMemory)
        writer.append(endedMilliseconds)
        writer.append(outputEnd)
        return writer.bytes
    }

    public init?<Payload: Collection<UInt8>>(decoding payload: Payload) {
        var reader = ControlFieldReader(payload)
        guard let status = reader.int(), let timedOut = reader.bool(), let oom = reader.bool(),
            let ended = reader.int64(), let end = reader.int64(), reader.isAtEnd
        else { return nil }
        self.init(status: status, timedOut: timedOut, outOfMemory: oom, endedMilliseconds: ended, outputEnd: end)
    }
}

/// Why a request failed: a code the host can act on, the errno when the sandbox's system
/// said no (0 otherwise), and a message for people.
public struct ControlFailure: Sendable, Equatable, Error {
    /// Codes other than errno's.
    public enum Code {
        public static let unknownCommand = "unknown-command"
        public static let finished = "finished"
        public static let badRequest = "bad-request"
        public static let exists = "exists"
        public static let limit = "limit"
        public static let spawn = "spawn"
        public static let system = "system"
        public static let notTerminal = "not-terminal"
        public static let inputClosed = "input-closed"
        public static let cancelled = "cancelled"
    }

    public var code: String
    public var errno: Int32
    public var message: String

    public init(_ code: String, errno: Int32 = 0, _ message: String) {
        self.code = code
        self.errno = errno
        self.message = message
    }

    public func encoded() -> [UInt8] {
        var writer = ControlFieldWriter()
        writer.append(code)
        writer.append(Int64(errno))
        writer.append(message)
        return writer.bytes
    }

    /// Any payload decodes: one that is not a failure's becomes its message.
    public init<Payload: Collection<UInt8>>(decoding payload: Payload) {
        var reader = ControlFieldReader(payload)
        if let code = reader.string(), let number = reader.int64(), let message = reader.string(), reader.isAtEnd {
            self.init(code, errno: Int32(truncatingIfNeeded: number), message)
        } else {
            self.init(Code.badRequest, String(decoding: payload.prefix(512), as: UTF8.self))
        }
    }
}

/// Stream a command's output from `offset`; `stdin` to write to its stdin too.
public struct AttachRequest: Sendable, Equatable {
    public var commandID: String
    public var offset: Int64
    public var stdin: Bool
    public var outputWindow: Int

    public init(commandID: String, offset: Int64, stdin: Bool = false, outputWindow: Int = ControlLimits.outputWindow) {
        self.commandID = commandID
        self.offset = offset
        self.stdin = stdin
        self.outputWindow = outputWindow
    }

    public func encoded() -> [UInt8] {
        var writer = ControlFieldWriter()
        writer.append(commandID)
        writer.append(offset)
        writer.append(stdin)
        writer.append(outputWindow)
        return writer.bytes
    }

    public init?<Payload: Collection<UInt8>>(decoding payload: Payload) {
        var reader = ControlFieldReader(payload)
        guard let id = reader.string(), let offset = reader.int64(), let stdin = reader.bool(),
            let window = reader.int(), reader.isAtEnd
        else { return nil }
        self.init(commandID: id, offset: offset, stdin: stdin, outputWindow: window)
    }
}

/// Answers an `attach`: the command (as a listing shows it), the offset of the first byte
/// that follows, and how many bytes before it, from the offset asked for, are gone.
public struct AttachedReport: Sendable, Equatable {
    public var command: CommandRecord
    public var startOffset: Int64
    public var dropped: Int64

    public init(command: CommandRecord, startOffset: Int64, dropped: Int64) {
        self.command = command
        self.startOffset = startOffset
        self.dropped = dropped
    }

    public func encoded() -> [UInt8] {
        var writer = ControlFieldWriter()
        writer.append(raw: command.encoded())
        writer.append(startOffset)
        writer.append(dropped)
        return writer.bytes
    }

    public init?<Payload: Collection<UInt8>>(decoding payload: Payload) {
        var reader = ControlFieldReader(payload)
        guard let record = reader.raw().flatMap(CommandRecord.init(decoding:)), let start = reader.int64(),
            let dropped = reader.int64(), reader.isAtEnd
        else { return nil }
        self.init(command: record, startOffset: start, dropped: dropped)
    }
}

/// Send `signal` to a command's process group.
public struct SignalRequest: Sendable, Equatable {
    public var commandID: String
    public var signal: Int32

    public init(commandID: String, signal: Int32) {
        self.commandID = commandID
        self.signal = signal
    }

    public func encoded() -> [UInt8] {
        var writer = ControlFieldWriter()
        writer.append(commandID)
        writer.append(Int64(signal))
        return writer.bytes
    }

    public init?<Payload: Collection<UInt8>>(decoding payload: Payload) {
        var reader = ControlFieldReader(payload)
        guard let id = reader.string(), let signal = reader.int64(), reader.isAtEnd,
            let number = Int32(exactly: signal)
        else { return nil }
        self.init(commandID: id, signal: number)
    }
}

/// One command as corral-init keeps it: in a `commands` listing (one per `data` frame) and in
/// an `AttachedReport`.
public struct CommandRecord: Sendable, Equatable {
    public var commandID: String
    public var pid: Int
    /// At most `ControlLimits.maxListedArgumentBytes` of them.
    public var arguments: [String]
    public var startedMilliseconds: Int64
    /// Nil while it runs.
    public var exit: ExitReport?
    public var detached: Bool
    public var terminal: Bool
    public var stdinOpen: Bool
    /// The offset just past its last output byte so far, and the first one still kept.
    public var outputEnd: Int64
    public var retainedStart: Int64

    public init(
        commandID: String, pid: Int, arguments: [String], startedMilliseconds: Int64, exit: ExitReport?,
        detached: Bool, terminal: Bool, stdinOpen: Bool, outputEnd: Int64, retainedStart: Int64
    ) {
        self.commandID = commandID
        self.pid = pid
        self.arguments = arguments
        self.startedMilliseconds = startedMilliseconds
        self.exit = exit
        self.detached = detached
        self.terminal = terminal
        self.stdinOpen = stdinOpen
        self.outputEnd = outputEnd
        self.retainedStart = retainedStart
    }

    public func encoded() -> [UInt8] {
        var writer = ControlFieldWriter()
        writer.append(commandID)
        writer.append(pid)
        writer.append(arguments)
        writer.append(startedMilliseconds)
        writer.append(raw: exit?.encoded() ?? [])
        writer.append(detached)
        writer.append(terminal)
        writer.append(stdinOpen)
        writer.append(outputEnd)
        writer.append(retainedStart)
        return writer.bytes
    }

    public init?<Payload: Collection<UInt8>>(decoding payload: Payload) {
        var reader = ControlFieldReader(payload)
        guard let id = reader.string(), let pid = reader.int(), let arguments = reader.strings(),
            let started = reader.int64(), let exitField = reader.raw(), let detached = reader.bool(),
            let terminal = reader.bool(), let stdinOpen = reader.bool(), let end = reader.int64(),
            let retained = reader.int64(), reader.isAtEnd
        else { return nil }
        var exit: ExitReport?
        if !exitField.isEmpty {
            guard let report = ExitReport(decoding: exitField) else { return nil }
            exit = report
        }
        self.init(
            commandID: id, pid: pid, arguments: arguments, startedMilliseconds: started, exit: exit,
            detached: detached, terminal: terminal, stdinOpen: stdinOpen, outputEnd: end, retainedStart: retained)
    }
}

/// A file operation, performed by corral-init as the sandbox's user.
public struct FileRequest: Sendable, Equatable {
    public enum Operation: String, Sendable, CaseIterable {
        /// `done` with a `FileStatus` (of the link itself when `noFollow`).
        case stat
        /// `data` frames of `FileStatus` entries (names only, no path), then `done`.
        case list
        /// `ready` with the file's `FileStatus`, `data` frames of its bytes, then `done`.
        case read
        /// `ready`; the host sends `input` and `inputEnd`; `done` once the file is in place.
        /// Written to a new file beside `path` and renamed over it, with `mode`; `exclusive`
        /// refuses when something is at `path` already.
        case write
        /// `done`; `parents` makes missing parents too and takes an existing directory.
        case mkdir
        /// `done`; `recursive` removes a directory and what it holds.
        case remove
        /// `done`: `path` is renamed to `target`.
        case rename
        /// `done`: `path` becomes a symbolic link to `target`.
        case symlink
        /// `data` frames of a tar of `path` (its last component as the top entry), then `done`.
        case tarOut
        /// `ready`; the host sends a tar as `input` and `inputEnd`, unpacked into the directory
        /// `path`; `done`.
        case tarIn
    }

    public var operation: Operation
    public var path: String
    public var target: String
    public var mode: UInt32
    public var parents: Bool
    public var recursive: Bool
    public var exclusive: Bool
    public var noFollow: Bool
    public var outputWindow: Int

    public init(
        _ operation: Operation, path: String, target: String = "", mode: UInt32 = 0o644, parents: Bool = false,
        recursive: Bool = false, exclusive: Bool = false, noFollow: Bool = false,
        outputWindow: Int = ControlLimits.outputWindow
    ) {
        self.operation = operation
        self.path = path
        self.target = target
        self.mode = mode
        self.parents = parents
        self.recursive = recursive
        self.exclusive = exclusive
        self.noFollow = noFollow
        self.outputWindow = outputWindow
    }

    /// Nil when a path holds a NUL byte.
    public func encoded() -> [UInt8]? {
        guard !path.utf8.contains(0), !target.utf8.contains(0) else { return nil }
        var writer = ControlFieldWriter()
        writer.append(operation.rawValue)
        writer.append(path)
        writer.append(target)
        writer.append(UInt64(mode))
        writer.append(parents)
        writer.append(recursive)
        writer.append(exclusive)
        writer.append(noFollow)
        writer.append(outputWindow)
        return writer.bytes
    }

    public init?<Payload: Collection<UInt8>>(decoding payload: Payload) {
        var reader = ControlFieldReader(payload)
        guard let name = reader.string(), let operation = Operation(rawValue: name), let path = reader.string(),
            let target = reader.string(), let mode = reader.uint64(), mode <= 0o7777, let parents = reader.bool(),
            let recursive = reader.bool(), let exclusive = reader.bool(), let noFollow = reader.bool(),
            let window = reader.int(), reader.isAtEnd, !path.utf8.contains(0), !target.utf8.contains(0)
        else { return nil }
        self.init(
            operation, path: path, target: target, mode: UInt32(mode), parents: parents, recursive: recursive,
            exclusive: exclusive, noFollow: noFollow, outputWindow: window)
    }
}

/// What is at a path, as corral-init's stat saw it.
public struct FileStatus: Sendable, Equatable {
    public enum Kind: UInt8, Sendable {
        case file = 0
        case directory = 1
        case symlink = 2
        case other = 3
    }

    /// The last component (a listing's entry name).
    public var name: String
    public var kind: Kind
    public var size: Int64
    /// Permission bits with setuid, setgid and sticky (st_mode & 0o7777).
    public var mode: UInt32
    public var modifiedNanoseconds: Int64
    public var linkTarget: String
    public var uid: Int64
    public var gid: Int64

    public init(
        name: String, kind: Kind, size: Int64, mode: UInt32, modifiedNanoseconds: Int64, linkTarget: String = "",
        uid: Int64 = 0, gid: Int64 = 0
    ) {
        self.name = name
        self.kind = kind
        self.size = size
        self.mode = mode
        self.modifiedNanoseconds = modifiedNanoseconds
        self.linkTarget = linkTarget
        self.uid = uid
        self.gid = gid
    }

    public func encoded() -> [UInt8] {
        var writer = ControlFieldWriter()
        writer.append(name)
        writer.append(UInt64(kind.rawValue))
        writer.append(size)
        writer.append(UInt64(mode))
        writer.append(modifiedNanoseconds)
        writer.append(linkTarget)
        writer.append(uid)
        writer.append(gid)
        return writer.bytes
    }

    public init?<Payload: Collection<UInt8>>(decoding payload: Payload) {
        var reader = ControlFieldReader(payload)
        guard let name = reader.string(), let rawKind = reader.uint64(), rawKind <= 3,
            let kind = Kind(rawValue: UInt8(rawKind)), let size = reader.int64(), let mode = reader.uint64(),
            let modified = reader.int64(), let link = reader.string(), let uid = reader.int64(),
            let gid = reader.int64(), reader.isAtEnd
        else { return nil }
        self.init(
            name: name, kind: kind, size: size, mode: UInt32(truncatingIfNeeded: mode), modifiedNanoseconds: modified,
            linkTarget: link, uid: uid, gid: gid)
    }

    /// A listing's `data` frame: entries, each a raw field.
    public static func encodeListing(_ entries: [[UInt8]]) -> [UInt8] {
        var writer = ControlFieldWriter()
        for entry in entries { writer.append(raw: entry) }
        return writer.bytes
    }

    public static func decodeListing<Payload: Collection<UInt8>>(_ payload: Payload) -> [FileStatus]? {
        var reader = ControlFieldReader(payload)
        var entries: [FileStatus] = []
        while !reader.isAtEnd {
            guard let field = reader.raw(), let entry = FileStatus(decoding: field) else { return nil }
            entries.append(entry)
        }
        return entries
    }
}
