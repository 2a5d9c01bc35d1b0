import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Directories only their owner may enter (0700): the state directory and what holds
/// sessions, records and sockets. One that exists with a looser mode is tightened when this
/// process owns it, so that an upgrade closes what an older corral left open.
public enum PrivateDirectory {
    /// Makes `url` with mode 0700 (missing parents too), or tightens it.
    public static func make(_ url: URL) throws {
        let path = url.path
        try makeMissing(url)
        var info = stat()
        guard stat(path, &info) == 0 else { throw failure("inspect", path) }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw CorralError(.io, "\(path) is not a directory", hint: "move it aside, or pick another state directory")
        }
        if info.st_mode & 0o077 != 0 && info.st_uid == geteuid() {
            guard chmod(path, 0o700) == 0 else { throw failure("restrict the mode of", path) }
        }
    }

    /// mkdir -p with mode 0700 for what it makes; what exists stays as it is.
    private static func makeMissing(_ url: URL) throws {
        let path = url.path
        if access(path, F_OK) == 0 { return }
        let parent = url.deletingLastPathComponent()
        if parent.path != path && parent.path != "/" { try makeMissing(parent) }
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw failure("make", path) }
    }

    private static func failure(_ what: String, _ path: String) -> CorralError {
        CorralError(
            .io, "cannot \(what) \(path): \(String(cString: strerror(errno)))",
            hint: "check the state directory's permissions, or pick another with --state-dir")
    }
}
