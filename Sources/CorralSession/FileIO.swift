import CCorralSession
import CorralCore
import CorralPOSIX
import Foundation

/// Thin, throwing wrappers over the POSIX calls the store makes. Every error names the
/// operation and the file, and maps errno onto a `CorralError` code a caller can act on.
enum FileIO {
    static func error(_ operation: String, _ path: String, errno code: Int32 = errno) -> CorralError {
        let reason = String(cString: strerror(code))
        switch code {
        case ENOSPC, EDQUOT:
            return CorralError(
                .io, "cannot \(operation) \(path): \(outOfSpace)",
                hint: "free space on the file system that holds \(path); nothing was kept of the write that failed")
        case EACCES, EPERM, EROFS:
            return CorralError(
                .permissionDenied, "cannot \(operation) \(path): \(reason)",
                hint: "check the permissions of the state directory (--state-dir or CORRAL_STATE_DIR)")
        case EMFILE, ENFILE:
            return CorralError(
                .resourceExhausted, "cannot \(operation) \(path): too many open files",
                hint: "raise the open-file limit (ulimit -n) or lower FileSessionStore's maxOpenSessions")
        default:
            return CorralError(.io, "cannot \(operation) \(path): \(reason)")
        }
    }

    private static let outOfSpace = "no space left on device"

    /// True for the error `error(_:_:errno:)` makes of ENOSPC or EDQUOT.
    static func isOutOfSpace(_ error: CorralError) -> Bool {
        error.code == .io && error.message.hasSuffix(outOfSpace)
    }

    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o600, operation: String = "open") throws -> Int32 {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno != EINTR { throw error(operation, path) }
        }
    }

    /// Reads up to `count` bytes at `offset`; fewer only at end of file.
    static func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, path: String) throws
        -> Int
    {
        guard let base = buffer.baseAddress else { return 0 }
        var done = 0
        while done < buffer.count {
            let n = Glibc.pread(fd, base + done, buffer.count - done, off_t(offset) + off_t(done))
            if n > 0 {
                done += n
            } else if n == 0 {
                break
            } else if errno != EINTR {
                throw error("read", path)
            }
        }
        return done
    }

    static func pread(_ fd: Int32, count: Int, at offset: UInt64, path: String) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let got = try bytes.withUnsafeMutableBytes { try pread(fd, into: $0, at: offset, path: path) }
        if got < count { bytes.removeLast(count - got) }
        return bytes
    }

    /// Writes all of `bytes` at `offset`. On failure, how much was written is unknown; the
    /// caller truncates back to where it started.
    static func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, path: String) throws {
        guard let base = bytes.baseAddress else { return }
        var done = 0
        while done < bytes.count {
            let n = Glibc.pwrite(fd, base + done, bytes.count - done, off_t(offset) + off_t(done))
            if n > 0 {
                done += n
            } else if n == 0 {
                throw error("write", path, errno: EIO)
            } else if errno != EINTR {
                throw error("write", path)
            }
        }
    }

    static func pwrite(_ fd: Int32, _ bytes: [UInt8], at offset: UInt64, path: String) throws {
        try bytes.withUnsafeBytes { try pwrite(fd, $0, at: offset, path: path) }
    }

    static func size(_ fd: Int32, path: String) throws -> UInt64 {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw error("stat", path) }
        return UInt64(info.st_size)
    }

    static func truncate(_ fd: Int32, to length: UInt64, path: String) throws {
        while ftruncate(fd, off_t(length)) != 0 {
            if errno != EINTR { throw error("truncate", path) }
        }
    }

    static func syncData(_ fd: Int32, path: String) throws {
        while fdatasync(fd) != 0 {
            if errno != EINTR { throw error("fdatasync", path) }
        }
    }

    static func syncAll(_ fd: Int32, path: String) throws {
        while fsync(fd) != 0 {
            if errno != EINTR { throw error("fsync", path) }
        }
    }

    /// fsync on a directory, so that entries created, renamed or removed in it survive a crash.
    static func syncDirectory(_ path: String) throws {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try syncAll(fd, path: path)
    }

    static func exists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// Names in a directory, without `.` and `..`. A missing directory has none.
    static func list(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else {
            if errno == ENOENT { return [] }
            throw error("list", path)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = DirectoryEntry.name(entry)
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func makeDirectory(_ path: String) throws {
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw error("create directory", path) }
    }

    /// Creates `path` and any missing parents, making each new entry durable in its parent.
    static func makeDirectories(_ path: String) throws {
        if isDirectory(path) { return }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty, parent != path { try makeDirectories(parent) }
        if mkdir(path, 0o700) != 0 {
            if errno == EEXIST { return }
            throw error("create directory", path)
        }
        if !parent.isEmpty { try syncDirectory(parent) }
    }

    static func rename(_ from: String, _ to: String) throws {
        if Glibc.rename(from, to) != 0 { throw error("rename \(from) to", to) }
    }

    /// rename that refuses to replace. Returns false when `to` already exists.
    static func renameNoReplace(_ from: String, _ to: String) throws -> Bool {
        if corral_rename_noreplace(from, to) == 0 { return true }
        switch errno {
        case EEXIST, ENOTEMPTY: return false
        case EINVAL, ENOSYS:
            // The file system cannot refuse atomically: check, then rename. rename(2) onto a
            // non-empty directory fails anyway, and a session directory is never empty.
            if exists(to) { return false }
            if Glibc.rename(from, to) == 0 { return true }
            if errno == EEXIST || errno == ENOTEMPTY { return false }
            throw error("rename \(from) to", to)
        default:
            throw error("rename \(from) to", to)
        }
    }

    /// Removes a directory and everything in it (one level of files; session directories
    /// hold no subdirectories).
    static func removeTree(_ path: String) {
        for name in (try? list(path)) ?? [] {
            let child = path + "/" + name
            if isDirectory(child) { removeTree(child) } else { unlink(child) }
        }
        rmdir(path)
    }

    /// Writes a small file atomically: a temporary beside it, fsync, rename over the target,
    /// fsync the directory.
    static func writeAtomically(_ bytes: [UInt8], to path: String, directory: String) throws {
        let temporary = "\(path).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        let fd = try open(temporary, O_WRONLY | O_CREAT | O_EXCL, operation: "create")
        do {
            try pwrite(fd, bytes, at: 0, path: temporary)
            try syncAll(fd, path: temporary)
            close(fd)
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        do {
            try rename(temporary, path)
        } catch {
            unlink(temporary)
            throw error
        }
        try syncDirectory(directory)
    }

    static func readWholeFile(_ path: String, limit: Int = 1 << 20) throws -> [UInt8] {
        let fd = try open(path, O_RDONLY)
        defer { close(fd) }
        let size = try size(fd, path: path)
        guard size <= UInt64(limit) else {
            throw CorralError(.corrupted, "\(path) is \(size) bytes, more than the \(limit) expected")
        }
        return try pread(fd, count: Int(size), at: 0, path: path)
    }

    /// Takes or releases an exclusive advisory lock (flock) on `fd`, waiting for it.
    static func lock(_ fd: Int32, path: String) throws {
        while flock(fd, LOCK_EX) != 0 {
            if errno != EINTR { throw error("lock", path) }
        }
    }

    static func unlock(_ fd: Int32) {
        _ = flock(fd, LOCK_UN)
    }
}

/// An open file, closed when the last reference goes. Reads use pread, so one descriptor
/// serves any number of concurrent readers.
final class OpenFile: Sendable {
    let fd: Int32
    let path: String

    init(path: String, flags: Int32, mode: mode_t = 0o600) throws {
        self.fd = try FileIO.open(path, flags, mode: mode)
        self.path = path
    }

    deinit { close(fd) }

    func size() throws -> UInt64 { try FileIO.size(fd, path: path) }
}
