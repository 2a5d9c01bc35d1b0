import CorralCore
import Crypto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Where the vault's 256-bit AES key came from.
public enum VaultKeyOrigin: Sendable, Hashable, CustomStringConvertible {
    /// An environment variable holding the key in base64.
    case environment(variable: String)
    /// A key file with mode 0600.
    case file(URL)
    /// A key file this process just made, because there was none.
    case created(URL)

    public var description: String {
        switch self {
        case .environment(let variable): "the environment variable \(variable)"
        case .file(let url): url.path
        case .created(let url): "\(url.path) (new)"
        }
    }
}

/// Loads, checks and makes vault keys. A key file holds the key in base64 on one line, so
/// that it can be moved into an environment variable as it is.
enum VaultKeyLoader {
    static let keyByteCount = 32

    static func load(
        fileURL: URL, environmentVariable: String, environment: [String: String], vaultExists: Bool,
        createIfMissing: Bool
    ) throws -> (SymmetricKey, VaultKeyOrigin) {
        if let text = environment[environmentVariable], !text.isEmpty {
            let key = try decode(text, source: "the environment variable \(environmentVariable)")
            return (key, .environment(variable: environmentVariable))
        }
        if let key = try readFile(fileURL) {
            return (key, .file(fileURL))
        }
        if vaultExists {
            throw CorralError(
                .notFound, "the vault exists but its key file \(fileURL.path) does not",
                hint: "restore the key file, or set \(environmentVariable) to the key the vault was sealed with")
        }
        guard createIfMissing else {
            throw CorralError(
                .notFound, "no vault key: \(fileURL.path) does not exist and \(environmentVariable) is not set",
                hint: "store a credential with `corral vault put` to create one")
        }
        return (try create(fileURL), .created(fileURL))
    }

    static func decode(_ text: String, source: String) throws -> SymmetricKey {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let data = Data(base64Encoded: trimmed), data.count == keyByteCount else {
            throw CorralError(
                .invalidArgument, "the vault key in \(source) is not \(keyByteCount) bytes in base64",
                hint: "make one with `head -c 32 /dev/urandom | base64`")
        }
        return SymmetricKey(data: data)
    }

    /// The key in the file, or nil when there is no file. Refuses a file that others can read.
    static func readFile(_ url: URL) throws -> SymmetricKey? {
        var info = stat()
        guard stat(url.path, &info) == 0 else {
            if errno == ENOENT { return nil }
            throw AtomicFile.ioError("cannot stat the vault key file \(url.path)")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw CorralError(.invalidArgument, "the vault key file \(url.path) is not a regular file")
        }
        let permissions = info.st_mode & 0o777
        guard permissions & 0o077 == 0 else {
            throw CorralError(
                .permissionDenied,
                "refusing the vault key file \(url.path): its mode \(String(permissions, radix: 8)) lets group or others read it",
                hint: "run `chmod 600 \(url.path)` (and consider replacing the key and the credentials it sealed)")
        }
        guard let bytes = try AtomicFile.read(url, limit: 4096) else { return nil }
        return try decode(String(decoding: bytes, as: UTF8.self), source: url.path)
    }

    /// Writes a new random key with mode 0600; refuses to replace a file that appeared
    /// meanwhile.
    static func create(_ url: URL) throws -> SymmetricKey {
        let directory = url.deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(
                at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw CorralError(.io, "cannot make the directory \(directory.path) for the vault key", underlying: error)
        }
        let key = SymmetricKey(size: .bits256)
        let text = key.withUnsafeBytes { Data($0).base64EncodedString() } + "\n"
        let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw AtomicFile.ioError("cannot create the vault key file \(url.path)") }
        defer { close(fd) }
        do {
            guard fchmod(fd, 0o600) == 0 else { throw AtomicFile.ioError("cannot set the mode of \(url.path)") }
            try AtomicFile.writeAll(fd, Array(text.utf8), path: url.path)
            guard fsync(fd) == 0 else { throw AtomicFile.ioError("cannot fsync \(url.path)") }
            try AtomicFile.syncDirectory(directory)
        } catch {
            unlink(url.path)
            throw error
        }
        return key
    }
}
