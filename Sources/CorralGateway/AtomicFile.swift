import CorralCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// File writes that either happen whole or not at all, and survive a crash once they return:
/// write a temporary file beside the target, fsync it, rename it over the target, fsync the
/// directory.
public enum AtomicFile {
    public static func write(_ bytes: [UInt8], to url: URL, mode: mode_t = 0o600) throws {
        let directory = url.deletingLastPathComponent()
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        let fd = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw ioError("cannot create \(temporary.path)") }
        var closed = false
        defer {
            if !closed { close(fd) }
        }
        do {
            try writeAll(fd, bytes, path: temporary.path)
            // The mode given to open() is filtered by the umask; set it exactly.
            guard fchmod(fd, mode) == 0 else { throw ioError("cannot set the mode of \(temporary.path)") }
            guard fsync(fd) == 0 else { throw ioError("cannot fsync \(temporary.path)") }
            closed = true
            guard close(fd) == 0 else { throw ioError("cannot close \(temporary.path)") }
            guard rename(temporary.path, url.path) == 0 else {
                throw ioError("cannot rename \(temporary.path) to \(url.path)")
            }
        } catch {
            unlink(temporary.path)
            throw error
        }
        try syncDirectory(directory)
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                throw ioError("cannot write \(path)")
            }
            offset += written
        }
    }

    static func syncDirectory(_ directory: URL) throws {
        let fd = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ioError("cannot open directory \(directory.path)") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ioError("cannot fsync directory \(directory.path)") }
    }

    /// The whole file, or nil when it does not exist.
    static func read(_ url: URL, limit: Int = 64 << 20) throws -> [UInt8]? {
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw ioError("cannot open \(url.path)")
        }
        defer { close(fd) }
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw ioError("cannot read \(url.path)")
            }
            if count == 0 { return result }
            result.append(contentsOf: buffer[0..<count])
            guard result.count <= limit else {
                throw CorralError(.resourceExhausted, "\(url.path) is larger than \(ByteSize(bytes: Int64(limit)))")
            }
        }
    }

    static func ioError(_ message: String) -> CorralError {
        let code = errno
        return CorralError(.io, "\(message): \(String(cString: strerror(code)))")
    }
}

/// An exclusive `flock` on a file, held for the closure: serialises read-modify-write cycles
/// between processes (the command line and a running service).
func withFileLock<T>(_ url: URL, _ body: () throws -> T) throws -> T {
    let fd = open(url.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw AtomicFile.ioError("cannot open the lock file \(url.path)") }
    defer { close(fd) }
    while flock(fd, LOCK_EX) != 0 {
        if errno != EINTR { throw AtomicFile.ioError("cannot lock \(url.path)") }
    }
    defer { flock(fd, LOCK_UN) }
    return try body()
}
