import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A unix socket's path must fit `sun_path` (108 bytes); a deep state directory does not.
/// Through an open descriptor of the socket's directory, `/proc/self/fd/N/NAME`, the path is
/// short whatever the directory's length.
/// Keep it alive (`withExtendedLifetime`) until the bind or connect is done.
public final class UnixSocketPath {
    /// The path to bind or connect to.
    public let usable: String
    private let directoryFD: Int32

    public init(_ path: String) {
        if path.utf8.count >= 100 {
            let directory = (path as NSString).deletingLastPathComponent
            let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            directoryFD = fd
            usable = fd >= 0 ? "/proc/self/fd/\(fd)/\((path as NSString).lastPathComponent)" : path
        } else {
            directoryFD = -1
            usable = path
        }
    }

    deinit {
        if directoryFD >= 0 { close(directoryFD) }
    }
}

extension UnixSocketPath {
    /// Whether something accepts connections on the unix socket at `path`: a connect, without
    /// a byte sent. A socket file left by a process that died refuses.
    public static func accepts(_ path: String) -> Bool {
        let usable = UnixSocketPath(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let result = usable.withAddress { connect(fd, $0, $1) } ?? -1
        return result == 0
    }

    /// A socket listening at `path` (a socket file already there is replaced), close-on-exec
    /// and non-blocking, with the file's mode set to `mode`. Whoever closes it leaves the file:
    /// unlike a socket bound through NIO, whose close unlinks the path, and so could unlink the
    /// socket another listener has bound there since.
    public static func listeningSocket(_ path: String, mode: mode_t, backlog: Int32) throws -> Int32 {
        func failure(_ what: String) -> CorralError {
            CorralError(.io, "cannot \(what) the unix socket \(path): \(String(cString: strerror(errno)))")
        }
        var status = stat()
        if lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK, unlink(path) != 0, errno != ENOENT {
            throw failure("replace")
        }
        let fd = socket(
            AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw failure("make") }
        let usable = UnixSocketPath(path)
        guard usable.withAddress({ bind(fd, $0, $1) }) == 0 else {
            let error = failure("bind")
            close(fd)
            throw error
        }
        guard chmod(path, mode) == 0 else {
            let error = failure("set the mode of")
            close(fd)
            throw error
        }
        guard listen(fd, backlog) == 0 else {
            let error = failure("listen on")
            close(fd)
            throw error
        }
        return fd
    }

    /// Calls `body` with this path as a `sockaddr_un`; nil when it does not fit one.
    func withAddress(_ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(usable.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        return withExtendedLifetime(self) {
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    body($0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
    }
}
