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
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(usable.usable.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return withExtendedLifetime(usable) { result == 0 }
    }
}
