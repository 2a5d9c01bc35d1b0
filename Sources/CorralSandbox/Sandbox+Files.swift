import CorralCore
import CurlHTTP
import DockerEngine
import Foundation
import TarArchive

/// Files in and out of a sandbox, through the engine's archive API: it works for any image,
/// needs nothing inside the sandbox, and keeps ownership (files go in as the sandbox user).
///
/// Paths inside the sandbox must be absolute and free of `..`. The engine resolves them in
/// the container's own root, and it can write only to the workspace volume: the root is
/// read-only, and tmpfs mounts (/tmp, HOME) are not reachable through the archive API.
extension Sandbox {
    /// What is at `path`, or nil when nothing is.
    public func stat(_ path: String) async throws -> PathStat? {
        let path = try Self.checkedPath(path)
        do {
            return try await engine.statPath(container: containerName, path: path)
        } catch let error as DockerEngineError where error.isNotFound {
            if try await containerMissing() { throw gone() }
            return nil
        }
    }

    /// The contents of the regular file at `path`, refused above `limit` bytes.
    public func readFile(_ path: String, limit: Int) async throws -> [UInt8] {
        let path = try Self.checkedPath(path)
        let archive = try await archiveBytes(of: path, limit: limit + 64 << 10)
        return try await runOnThread(name: "corral-tar") {
            let reader = try TarReader(bytes: archive)
            guard let entry = try reader.nextEntry() else {
                throw CorralError(.engine, "the engine sent an empty archive for \(path)")
            }
            guard entry.type == .file else {
                throw CorralError.invalidArgument("\(path) is a \(entry.type), not a regular file")
            }
            guard entry.size <= limit else {
                throw CorralError(
                    .resourceExhausted,
                    "\(path) is \(ByteSize(bytes: entry.size)); the limit is \(ByteSize(bytes: Int64(limit)))")
            }
            return try reader.readData(maxBytes: limit)
        }
    }

    /// Writes `contents` to `path` as the sandbox user, replacing any file there. The parent
    /// directory must exist.
    public func writeFile(_ path: String, contents: [UInt8], mode: UInt32 = 0o644) async throws {
        let path = try Self.checkedPath(path)
        let (parent, name) = Self.split(path)
        guard !name.isEmpty else { throw CorralError.invalidArgument("\(path) names a directory, not a file") }
        let owner = self.owner
        let tar = try await runOnThread(name: "corral-tar") {
            let writer = try TarWriter()
            try writer.addFile(path: name, contents: contents, mode: mode, uid: owner.uid, gid: owner.gid)
            return try writer.finish()
        }
        try await putArchive(at: parent, body: .bytes(tar), describing: path)
    }

    /// Copies a host file or directory into the sandbox. When `path` is an existing directory
    /// the source goes inside it under its own name; otherwise `path` is the new name.
    @discardableResult
    public func copyIn(from source: URL, to path: String) async throws -> Int64 {
        let path = try Self.checkedPath(path)
        let (directory, name): (String, String)
        if let existing = try await stat(path), existing.isDirectory {
            (directory, name) = (path, source.lastPathComponent)
        } else {
            (directory, name) = Self.split(path)
        }
        return try await HostArchive.stream(source, as: name, ownership: owner) { tar in
            try await putArchive(at: directory, body: .stream(tar), describing: path)
        }
    }

    /// Sends a tar stream the caller supplies (`corral cp - ID:/dir`) into `directory`, after
    /// checking every entry: absolute names, `..`, links that leave the archive and special
    /// files are refused, and every entry is made the sandbox user's.
    @discardableResult
    public func copyIn(tar pull: @escaping @Sendable () throws -> [UInt8]?, to directory: String) async throws -> Int64
    {
        let directory = try Self.checkedPath(directory)
        let owner = self.owner
        return try await HostArchive.stream(producing: { writer in
            let reader = try TarReader(pull: pull)
            return try TarValidator.validate(from: reader, into: writer, options: .init(ownership: owner)).bytes
        }) { tar in
            try await putArchive(at: directory, body: .stream(tar), describing: directory)
        }
    }

    /// Copies `path` out of the sandbox to the host. When `destination` is an existing
    /// directory the copy goes inside it; otherwise it becomes `destination`. Entries that
    /// would land outside are refused, and a refused copy leaves nothing behind.
    @discardableResult
    public func copyOut(_ path: String, to destination: URL) async throws -> Int64 {
        let path = try Self.checkedPath(path)
        return try await HostArchive.extract(to: destination) { channel in
            try await copyOut(path, tarChunks: { try await channel.send($0) })
        }
    }

    /// Streams `path` out as a tar to `sink` (`corral cp ID:/path -`).
    public func copyOut(_ path: String, tarTo sink: @escaping @Sendable ([UInt8]) throws -> Void) async throws {
        try await copyOut(path, tarChunks: { try sink($0) })
    }

    /// Streams `path` out as a tar, a chunk at a time, to an async consumer (an HTTP response).
    public func copyOut(_ path: String, tarChunks consume: ([UInt8]) async throws -> Void) async throws {
        let path = try Self.checkedPath(path)
        try await mapArchiveErrors(path) {
            try await engine.withArchive(container: containerName, path: path) { _, body in
                for try await chunk in body { try await consume(chunk) }
            }
        }
    }

    // MARK: Plumbing

    /// Who files that go in belong to: the sandbox's own user.
    var owner: TarOwnership {
        let user = SandboxUser(for: id)
        return TarOwnership(uid: Int(user.uid), gid: Int(user.gid))
    }

    /// An absolute path without `..`, `.` components or NUL; trailing slashes dropped.
    public static func checkedPath(_ path: String) throws -> String {
        guard path.hasPrefix("/") else {
            throw CorralError.invalidArgument(
                "sandbox path '\(path)' is not absolute", hint: "use a path such as /workspace/file.txt")
        }
        guard !path.contains("\0") else { throw CorralError.invalidArgument("sandbox path contains a NUL byte") }
        let parts = path.split(separator: "/")
        if parts.contains("..") || parts.contains(".") {
            throw CorralError.invalidArgument(
                "sandbox path '\(path)' contains '.' or '..'", hint: "give the path without them")
        }
        return "/" + parts.joined(separator: "/")
    }

    public static func split(_ path: String) -> (String, String) {
        guard let slash = path.lastIndex(of: "/") else { return ("/", path) }
        let parent = String(path[..<slash])
        return (parent.isEmpty ? "/" : parent, String(path[path.index(after: slash)...]))
    }

    private func archiveBytes(of path: String, limit: Int) async throws -> [UInt8] {
        try await mapArchiveErrors(path) {
            try await engine.withArchive(container: containerName, path: path) { _, body in
                try await body.collect(upTo: limit)
            }
        }
    }

    private func putArchive(at directory: String, body: HTTPRequestBody, describing path: String) async throws {
        try await mapArchiveErrors(path) {
            try await engine.putArchive(container: containerName, path: directory, tar: body)
        }
    }

    private func mapArchiveErrors<T>(_ path: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as DockerEngineError {
            if error.isNotFound {
                if try await containerMissing() { throw gone() }
                throw CorralError.notFound("no such file or directory in sandbox \(id): \(path)")
            }
            if error.message.contains("read-only") || error.message.contains("read only") {
                throw CorralError(
                    .permissionDenied, "\(path) is on the sandbox's read-only root",
                    hint: "write under \(workspacePath) instead")
            }
            throw CorralError(.engine, "sandbox \(id): \(error.message)")
        }
    }

    var workspacePath: String { environment.workspace }

    func containerMissing() async throws -> Bool {
        do {
            _ = try await engine.inspectContainer(containerName)
            return false
        } catch let error as DockerEngineError where error.isNotFound {
            return true
        }
    }

    func gone() -> CorralError {
        CorralError(.notFound, "sandbox \(id) is gone: its container no longer exists", hint: "provision a new sandbox")
    }
}
