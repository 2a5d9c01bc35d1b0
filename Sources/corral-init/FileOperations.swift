import ControlProtocol
import CorralPOSIX
import Glibc

/// A stream of the control connection that moves a file's bytes (or a listing, or a tar)
/// rather than a command's output. Owned by the control loop's thread.
protocol FileTransfer: AnyObject {
    /// Output bytes the host will still take.
    var credit: Int { get set }
    /// Whether `pump` would send something now.
    var wantsPump: Bool { get }
    /// Sends what the credit allows; true once the stream is over (its `done` or `failed` sent).
    func pump(_ connection: LoopConnection) -> Bool
    /// Takes input bytes; true once the stream is over.
    func input(_ bytes: ArraySlice<UInt8>, _ connection: LoopConnection) -> Bool
    /// The host sent the last input byte; true once the stream is over.
    func inputEnd(_ connection: LoopConnection) -> Bool
    /// The host abandoned the stream: undo what is half done.
    func abort()
}

extension FileTransfer {
    func input(_ bytes: ArraySlice<UInt8>, _ connection: LoopConnection) -> Bool { false }
    func inputEnd(_ connection: LoopConnection) -> Bool { false }
    var wantsPump: Bool { false }
    func pump(_ connection: LoopConnection) -> Bool { false }
}

/// The file operations of `FileRequest`, performed as PID 1's user (the sandbox's own), so
/// that the sandbox's own rules say yes or no: its read-only root, its tmpfs mounts, its
/// permissions, its full disk. Errors go back with their errno.
enum FileOperations {
    /// Answers `request` at once, or returns the transfer that will (after sending `ready`
    /// when the operation has one).
    static func start(_ request: FileRequest, stream: UInt32, connection: LoopConnection) -> (any FileTransfer)? {
        let path = request.path
        func fail(_ failure: ControlFailure) -> (any FileTransfer)? {
            connection.send(.failed, stream, failure.encoded())
            return nil
        }
        guard path.hasPrefix("/") else {
            return fail(ControlFailure(ControlFailure.Code.badRequest, "\(path) is not an absolute path"))
        }
        let window = min(max(request.outputWindow, 0), ControlLimits.maxOutputWindow)
        switch request.operation {
        case .stat:
            switch status(of: path, follow: !request.noFollow) {
            case .success(let status): connection.send(.done, stream, status.encoded())
            case .failure(let failure): return fail(failure)
            }
            return nil
        case .list:
            guard let directory = opendir(path) else { return fail(systemFailure(errno, "cannot list \(path)")) }
            return DirectoryTransfer(stream: stream, path: path, directory: directory, credit: window)
        case .read:
            let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
            guard fd >= 0 else { return fail(systemFailure(errno, "cannot read \(path)")) }
            var info = stat()
            guard fstat(fd, &info) == 0 else {
                let error = errno
                close(fd)
                return fail(systemFailure(error, "cannot read \(path)"))
            }
            guard info.st_mode & S_IFMT == S_IFREG else {
                close(fd)
                let error = info.st_mode & S_IFMT == S_IFDIR ? EISDIR : EINVAL
                return fail(
                    ControlFailure(
                        ControlFailure.Code.system, errno: error,
                        error == EISDIR ? "\(path) is a directory" : "\(path) is not a regular file"))
            }
            // Back to blocking reads: a regular file never waits long.
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
            connection.send(.ready, stream, FileStatus(info, name: baseName(path), linkTarget: "").encoded())
            return ReadTransfer(stream: stream, fd: fd, credit: window)
        case .write:
            switch WriteTransfer.open(request, stream: stream) {
            case .success(let transfer):
                connection.send(.ready, stream, [])
                return transfer
            case .failure(let failure):
                return fail(failure)
            }
        case .mkdir:
            if let failure = makeDirectory(path, mode: request.mode, parents: request.parents) { return fail(failure) }
        case .remove:
            if let failure = remove(path, recursive: request.recursive) { return fail(failure) }
        case .rename:
            guard request.target.hasPrefix("/") else {
                return fail(ControlFailure(ControlFailure.Code.badRequest, "\(request.target) is not an absolute path"))
            }
            guard rename(path, request.target) == 0 else {
                return fail(systemFailure(errno, "cannot rename \(path) to \(request.target)"))
            }
        case .symlink:
            guard symlink(request.target, path) == 0 else {
                return fail(systemFailure(errno, "cannot make the link \(path)"))
            }
        case .tarOut:
            switch TarProducer.open(path) {
            case .success(let producer): return TarOutTransfer(stream: stream, producer: producer, credit: window)
            case .failure(let failure): return fail(failure)
            }
        case .tarIn:
            var info = stat()
            guard stat(path, &info) == 0 else { return fail(systemFailure(errno, "cannot unpack into \(path)")) }
            guard info.st_mode & S_IFMT == S_IFDIR else {
                return fail(
                    ControlFailure(ControlFailure.Code.system, errno: ENOTDIR, "\(path) is not a directory"))
            }
            connection.send(.ready, stream, [])
            return TarInTransfer(stream: stream, unpacker: TarUnpacker(directory: path))
        }
        connection.send(.done, stream, [])
        return nil
    }

    static func systemFailure(_ error: Int32, _ what: String) -> ControlFailure {
        // The host adds the errno's text and name.
        ControlFailure(ControlFailure.Code.system, errno: error, what)
    }

    static func baseName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let parent = String(path[..<slash])
        return parent.isEmpty ? "/" : parent
    }

    static func status(of path: String, follow: Bool) -> Result<FileStatus, ControlFailure> {
        var info = stat()
        let result = follow ? stat(path, &info) : lstat(path, &info)
        guard result == 0 else { return .failure(systemFailure(errno, "cannot stat \(path)")) }
        let link = info.st_mode & S_IFMT == S_IFLNK ? readLink(path) : ""
        return .success(FileStatus(info, name: baseName(path), linkTarget: link))
    }

    static func readLink(_ path: String) -> String {
        var buffer = [CChar](repeating: 0, count: 4097)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count > 0 else { return "" }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func makeDirectory(_ path: String, mode: UInt32, parents: Bool) -> ControlFailure? {
        func isDirectory(_ path: String) -> Bool {
            var info = stat()
            return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
        }
        if parents {
            var prefix = ""
            let parts = path.split(separator: "/")
            for part in parts.dropLast() {
                prefix += "/" + part
                if mkdir(prefix, 0o755) != 0 && !(errno == EEXIST && isDirectory(prefix)) {
                    return systemFailure(errno == EEXIST ? ENOTDIR : errno, "cannot make the directory \(prefix)")
                }
            }
        }
        guard mkdir(path, mode_t(mode)) == 0 else {
            if errno == EEXIST && parents && isDirectory(path) { return nil }
            return systemFailure(errno, "cannot make the directory \(path)")
        }
        _ = chmod(path, mode_t(mode))
        return nil
    }

    static func remove(_ path: String, recursive: Bool) -> ControlFailure? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return systemFailure(errno, "cannot remove \(path)") }
        if info.st_mode & S_IFMT == S_IFDIR {
            if recursive {
                let error = removeTree(parent: AT_FDCWD, name: path)
                return error == 0 ? nil : systemFailure(error, "cannot remove \(path)")
            }
            return rmdir(path) == 0 ? nil : systemFailure(errno, "cannot remove \(path)")
        }
        return unlink(path) == 0 ? nil : systemFailure(errno, "cannot remove \(path)")
    }

    /// Removes the directory `name` (in `parent`) and everything in it, never following a
    /// symbolic link. Returns 0 or the first errno.
    private static func removeTree(parent: Int32, name: String) -> Int32 {
        let fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return errno }
        guard let directory = fdopendir(fd) else {
            let error = errno
            close(fd)
            return error
        }
        var names: [(String, Bool)] = []
        while let entry = readdir(directory) {
            let entryName = DirectoryEntry.name(entry)
            if entryName == "." || entryName == ".." { continue }
            var isDirectory = entry.pointee.d_type == UInt8(DT_DIR)
            if entry.pointee.d_type == UInt8(DT_UNKNOWN) {
                var info = stat()
                isDirectory =
                    fstatat(fd, entryName, &info, AT_SYMLINK_NOFOLLOW) == 0 && info.st_mode & S_IFMT == S_IFDIR
            }
            names.append((entryName, isDirectory))
        }
        var failure: Int32 = 0
        for (entryName, isDirectory) in names {
            let error =
                isDirectory ? removeTree(parent: fd, name: entryName) : (unlinkat(fd, entryName, 0) == 0 ? 0 : errno)
            if error != 0 && error != ENOENT && failure == 0 { failure = error }
        }
        closedir(directory)
        if failure != 0 { return failure }
        return unlinkat(parent, name, AT_REMOVEDIR) == 0 ? 0 : errno
    }
}

extension FileStatus {
    init(_ info: stat, name: String, linkTarget: String) {
        let kind: Kind =
            switch info.st_mode & S_IFMT {
            case S_IFREG: .file
            case S_IFDIR: .directory
            case S_IFLNK: .symlink
            default: .other
            }
        self.init(
            name: name, kind: kind, size: Int64(info.st_size), mode: UInt32(info.st_mode & 0o7777),
            modifiedNanoseconds: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec),
            linkTarget: linkTarget, uid: Int64(info.st_uid), gid: Int64(info.st_gid))
    }
}

/// Sends prepared frames (a listing of commands) as `data`, then `done`.
final class ListingTransfer: FileTransfer {
    let stream: UInt32
    var credit: Int
    private var frames: [[UInt8]]
    private var next = 0

    init(stream: UInt32, frames: [[UInt8]], credit: Int) {
        self.stream = stream
        self.frames = frames
        self.credit = credit
    }

    var wantsPump: Bool { next >= frames.count || frames[next].count <= credit }

    func pump(_ connection: LoopConnection) -> Bool {
        while next < frames.count, frames[next].count <= credit, connection.hasRoom {
            connection.send(.data, stream, frames[next])
            credit -= frames[next].count
            next += 1
        }
        guard next >= frames.count else { return false }
        connection.send(.done, stream, [])
        return true
    }

    func abort() {}
}

/// A directory's entries, a batch per `data` frame.
final class DirectoryTransfer: FileTransfer {
    let stream: UInt32
    let path: String
    var credit: Int
    private var directory: OpaquePointer?
    private var batch: [UInt8]?

    init(stream: UInt32, path: String, directory: OpaquePointer, credit: Int) {
        self.stream = stream
        self.path = path
        self.directory = directory
        self.credit = credit
    }

    var wantsPump: Bool { batch.map { $0.count <= credit } ?? true }

    func pump(_ connection: LoopConnection) -> Bool {
        while connection.hasRoom {
            if batch == nil { batch = nextBatch() }
            guard let pending = batch else { break }
            guard pending.count <= credit else { return false }
            if pending.isEmpty { break }
            connection.send(.data, stream, pending)
            credit -= pending.count
            batch = nil
        }
        guard batch?.isEmpty ?? true, directory == nil else { return false }
        connection.send(.done, stream, [])
        return true
    }

    /// Up to about 32 KiB of entries; empty at the end.
    private func nextBatch() -> [UInt8]? {
        guard let directory else { return [] }
        var entries: [[UInt8]] = []
        var size = 0
        let fd = dirfd(directory)
        while size < 32 << 10, let entry = readdir(directory) {
            let name = DirectoryEntry.name(entry)
            if name == "." || name == ".." { continue }
            var info = stat()
            guard fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            let link = info.st_mode & S_IFMT == S_IFLNK ? FileOperations.readLink(path + "/" + name) : ""
            let encoded = FileStatus(info, name: name, linkTarget: link).encoded()
            entries.append(encoded)
            size += encoded.count + 4
        }
        if entries.isEmpty {
            closedir(directory)
            self.directory = nil
            return []
        }
        return FileStatus.encodeListing(entries)
    }

    func abort() {
        if let directory { closedir(directory) }
        directory = nil
    }
}

/// A regular file's bytes, as `data` frames within the stream's credit, then `done`.
final class ReadTransfer: FileTransfer {
    let stream: UInt32
    var credit: Int
    private var fd: Int32
    private var buffer = [UInt8](repeating: 0, count: 60 << 10)

    init(stream: UInt32, fd: Int32, credit: Int) {
        self.stream = stream
        self.fd = fd
        self.credit = credit
    }

    var wantsPump: Bool { credit > 0 }

    func pump(_ connection: LoopConnection) -> Bool {
        // A few frames at a time, so that other streams get their turn.
        for _ in 0..<4 where credit > 0 && connection.hasRoom {
            let count = buffer.withUnsafeMutableBytes { raw in read(fd, raw.baseAddress, min(raw.count, credit)) }
            if count > 0 {
                connection.send(.data, stream, buffer[0..<count])
                credit -= count
            } else if count < 0 && errno == EINTR {
                continue
            } else if count < 0 {
                connection.send(.failed, stream, FileOperations.systemFailure(errno, "cannot read").encoded())
                abort()
                return true
            } else {
                connection.send(.done, stream, [])
                abort()
                return true
            }
        }
        return false
    }

    func abort() {
        if fd >= 0 { close(fd) }
        fd = -1
    }
}

/// A file written from the host's input: to a new file beside its path, renamed over it once
/// the input ends, so that no reader ever sees half of it.
final class WriteTransfer: FileTransfer {
    let stream: UInt32
    let path: String
    let temporary: String
    var credit = 0
    private var fd: Int32

    private init(stream: UInt32, path: String, temporary: String, fd: Int32) {
        self.stream = stream
        self.path = path
        self.temporary = temporary
        self.fd = fd
    }

    static func open(_ request: FileRequest, stream: UInt32) -> Result<WriteTransfer, ControlFailure> {
        var path = request.path
        var info = stat()
        if lstat(path, &info) == 0 {
            if request.exclusive {
                return .failure(
                    ControlFailure(ControlFailure.Code.system, errno: EEXIST, "\(path) exists already"))
            }
            // A link is written through, as a shell's redirection would.
            if info.st_mode & S_IFMT == S_IFLNK, let resolved = realpath(path, nil) {
                path = String(cString: resolved)
                free(resolved)
                if stat(path, &info) != 0 { info.st_mode = S_IFREG }
            }
            if info.st_mode & S_IFMT == S_IFDIR {
                return .failure(ControlFailure(ControlFailure.Code.system, errno: EISDIR, "\(path) is a directory"))
            }
        }
        let name = FileOperations.baseName(path)
        guard !name.isEmpty else {
            return .failure(ControlFailure(ControlFailure.Code.system, errno: EISDIR, "\(path) names a directory"))
        }
        let directory = FileOperations.parent(path)
        for _ in 0..<16 {
            let suffix = String(UInt64.random(in: 0...UInt64.max), radix: 36)
            let temporary = "\(directory == "/" ? "" : directory)/.\(name.prefix(200)).corral-\(suffix)"
            let fd = Glibc.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
            if fd < 0 && errno == EEXIST { continue }
            guard fd >= 0 else { return .failure(FileOperations.systemFailure(errno, "cannot write \(path)")) }
            guard fchmod(fd, mode_t(request.mode)) == 0 else {
                let error = errno
                close(fd)
                unlink(temporary)
                return .failure(FileOperations.systemFailure(error, "cannot set the mode of \(path)"))
            }
            return .success(WriteTransfer(stream: stream, path: path, temporary: temporary, fd: fd))
        }
        return .failure(
            ControlFailure(ControlFailure.Code.system, errno: EEXIST, "cannot make a new file beside \(path)"))
    }

    func input(_ bytes: ArraySlice<UInt8>, _ connection: LoopConnection) -> Bool {
        if let error = writeAll(fd, bytes) {
            connection.send(.failed, stream, FileOperations.systemFailure(error, "cannot write \(path)").encoded())
            abort()
            return true
        }
        connection.send(.inputCredit, stream, ControlCredit.encode(bytes.count))
        return false
    }

    func inputEnd(_ connection: LoopConnection) -> Bool {
        let closed = close(fd)
        let closeError = errno
        fd = -1
        if closed != 0 {
            unlink(temporary)
            connection.send(.failed, stream, FileOperations.systemFailure(closeError, "cannot write \(path)").encoded())
            return true
        }
        guard rename(temporary, path) == 0 else {
            let error = errno
            unlink(temporary)
            connection.send(.failed, stream, FileOperations.systemFailure(error, "cannot write \(path)").encoded())
            return true
        }
        connection.send(.done, stream, [])
        return true
    }

    func abort() {
        if fd >= 0 {
            close(fd)
            fd = -1
            unlink(temporary)
        }
    }
}

/// Writes all of `bytes` to a blocking descriptor; the errno of a failure, or nil.
func writeAll(_ fd: Int32, _ bytes: ArraySlice<UInt8>) -> Int32? {
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeBytes { raw -> Int in
            guard let base = raw.baseAddress else { return 0 }
            return write(fd, base + offset, raw.count - offset)
        }
        if written > 0 {
            offset += written
        } else if written < 0 && errno == EINTR {
            continue
        } else {
            return written < 0 ? errno : EIO
        }
    }
    return nil
}

/// A tar of a path, as `data` frames within the stream's credit, then `done`.
final class TarOutTransfer: FileTransfer {
    let stream: UInt32
    var credit: Int
    private let producer: TarProducer

    init(stream: UInt32, producer: TarProducer, credit: Int) {
        self.stream = stream
        self.producer = producer
        self.credit = credit
    }

    var wantsPump: Bool { credit > 0 }

    func pump(_ connection: LoopConnection) -> Bool {
        for _ in 0..<4 where credit > 0 && connection.hasRoom {
            switch producer.produce(limit: min(credit, 60 << 10)) {
            case .success(let bytes?):
                connection.send(.data, stream, bytes)
                credit -= bytes.count
            case .success(nil):
                connection.send(.done, stream, [])
                producer.close()
                return true
            case .failure(let failure):
                connection.send(.failed, stream, failure.encoded())
                producer.close()
                return true
            }
        }
        return false
    }

    func abort() { producer.close() }
}

/// A tar from the host's input, unpacked into a directory as it comes.
final class TarInTransfer: FileTransfer {
    let stream: UInt32
    var credit = 0
    private let unpacker: TarUnpacker

    init(stream: UInt32, unpacker: TarUnpacker) {
        self.stream = stream
        self.unpacker = unpacker
    }

    func input(_ bytes: ArraySlice<UInt8>, _ connection: LoopConnection) -> Bool {
        if let failure = unpacker.feed(bytes) {
            connection.send(.failed, stream, failure.encoded())
            unpacker.close()
            return true
        }
        connection.send(.inputCredit, stream, ControlCredit.encode(bytes.count))
        return false
    }

    func inputEnd(_ connection: LoopConnection) -> Bool {
        if let failure = unpacker.finish() {
            connection.send(.failed, stream, failure.encoded())
        } else {
            connection.send(.done, stream, [])
        }
        unpacker.close()
        return true
    }

    func abort() { unpacker.close() }
}
