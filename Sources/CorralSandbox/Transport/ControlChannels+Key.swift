import ControlProtocol
import CorralCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension ControlChannels {
    /// Writes a new sandbox's key twice: the host's copy (`control.secret`, 0600, outside what
    /// the sandbox sees), then the one corral-init reads at boot (`control.key`, 0444, in the
    /// mounted directory, whose own owner and mode keep other host users out).
    static func issue(_ key: ControlKey, secretFile: String, keyFile: String) throws {
        let text = key.hex + [UInt8(ascii: "\n")]
        try writeNewFile(secretFile, text, mode: 0o600)
        do {
            try writeNewFile(keyFile, text, mode: 0o444)
        } catch {
            unlink(secretFile)
            throw error
        }
    }

    /// The key kept for a sandbox made earlier (by this process or another).
    static func readSecret(_ secretFile: String, sandbox: SandboxID) throws -> ControlKey {
        guard let data = FileManager.default.contents(atPath: secretFile), let key = ControlKey(hex: Array(data)) else {
            throw CorralError(
                .notFound,
                "sandbox \(sandbox) has no control key (\(secretFile)): it was made without one, so its commands use the engine's exec"
            )
        }
        return key
    }

    /// Replaces `path` with a file of its own, created 0600 (no moment in which anyone else
    /// may open it), then given `mode`.
    private static func writeNewFile(_ path: String, _ bytes: [UInt8], mode: mode_t) throws {
        unlink(path)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw failure("cannot create \(path)") }
        defer { Glibc.close(fd) }
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { raw -> Int in
                guard let base = raw.baseAddress else { return -1 }
                return write(fd, base + offset, raw.count - offset)
            }
            if written > 0 {
                offset += written
            } else if written < 0 && errno == EINTR {
                continue
            } else {
                let error = failure("cannot write \(path)")
                unlink(path)
                throw error
            }
        }
        guard fchmod(fd, mode) == 0 else {
            let error = failure("cannot set the mode of \(path)")
            unlink(path)
            throw error
        }
    }

    private static func failure(_ what: String) -> CorralError {
        CorralError(
            .io, "\(what): \(String(cString: strerror(errno)))", hint: "check the state directory's permissions")
    }
}
