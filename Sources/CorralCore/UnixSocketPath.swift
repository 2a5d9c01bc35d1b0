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
