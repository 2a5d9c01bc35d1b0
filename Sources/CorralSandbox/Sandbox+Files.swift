import ControlProtocol
import CorralCore
import CurlHTTP
import DockerEngine
import Foundation
import TarArchive

/// Files in and out of a sandbox.
///
/// Over the control connection, when this process holds one, corral-init does the work as
/// the sandbox's user: anywhere that user may write (the workspace, /tmp, HOME), with the
/// sandbox's own errors (EACCES, ENOENT, EISDIR, EROFS, ENOSPC) passed through, and bytes
/// streamed within flow-control windows, never held whole. Otherwise the engine's archive API
/// does it: it needs nothing inside the sandbox and keeps ownership (files go in as the
/// sandbox user), but it reaches only the workspace volume (the root is read-only, and tmpfs
/// mounts are out of its sight).
///
/// Paths inside the sandbox must be absolute and free of `..`.
extension Sandbox {
    /// The control connection's file operations, when this process holds the connection.
    var controlFiles: ControlFiles? {
        control?.connection(for: id).map(ControlFiles.init(connection:))
    }

    /// What is at `path`, or nil when nothing is.
    public func stat(_ path: String) async throws -> PathStat? {
        let path = try Self.checkedPath(path)
        if let files = controlFiles {
            return try await files.stat(path).map { try PathStat(status: $0) }
        }
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
        if let files = controlFiles {
            var contents: [UInt8] = []
            try await files.read(
                path,
                check: { status in
                    guard status.size <= Int64(limit) else { throw Self.tooLarge(path, status.size, limit) }
                    contents.reserveCapacity(Int(status.size))
                },
                into: { chunk in
                    guard contents.count + chunk.count <= limit else {
                        throw Self.tooLarge(path, Int64(contents.count + chunk.count), limit)
                    }
                    contents += chunk
                })
            return contents
        }
        let archive = try await archiveBytes(of: path, limit: limit + 64 << 10)
        return try await runOnThread(name: "corral-tar") {
            let reader = try TarReader(bytes: archive)
            guard let entry = try reader.nextEntry() else {
                throw CorralError(.engine, "the engine sent an empty archive for \(path)")
            }
            guard entry.type == .file else {
                throw CorralError.invalidArgument("\(path) is a \(entry.type), not a regular file")
            }
            guard entry.size <= limit else { throw Self.tooLarge(path, entry.size, limit) }
            return try reader.readData(maxBytes: limit)
        }
    }

    /// Streams the regular file at `path` to `consume`, a chunk at a time, whatever its size;
    /// returns how many bytes it had.
    @discardableResult
    public func readFile(_ path: String, into consume: ([UInt8]) async throws -> Void) async throws -> Int64 {
        let path = try Self.checkedPath(path)
        var total: Int64 = 0
        if let files = controlFiles {
            try await files.read(path, check: { _ in }) { chunk in
                total += Int64(chunk.count)
                try await consume(chunk)
            }
            return total
        }
        // The engine's archive of the file, unpacked on a thread of its own into a channel.
        let archive = ByteChannel()
        let contents = ByteChannel()
        let unpacker = Task {
            try await runOnThread(name: "corral-tar") {
                do {
                    let reader = try TarReader(pull: { try archive.blockingReceive() })
                    guard let entry = try reader.nextEntry(), entry.type == .file else {
                        throw CorralError.invalidArgument("\(path) is not a regular file")
                    }
                    while let chunk = try reader.readChunk() { try contents.blockingSend(chunk) }
                    contents.finish()
                    archive.cancel()
                } catch {
                    contents.finish(throwing: error)
                    archive.cancel()
                    throw error
                }
            }
        }
        let feeder = Task {
            do {
                try await mapArchiveErrors(path) {
                    try await engine.withArchive(container: containerName, path: path) { _, body in
                        for try await chunk in body { try await archive.send(chunk) }
                    }
                }
                archive.finish()
            } catch {
                archive.finish(throwing: error)
                contents.finish(throwing: error)
            }
        }
        defer {
            feeder.cancel()
            unpacker.cancel()
            contents.cancel()
            archive.cancel()
        }
        while let chunk = try await contents.receive() {
            total += Int64(chunk.count)
            try await consume(chunk)
        }
        return total
    }

    /// Writes `contents` to `path` as the sandbox user, replacing any file there. The parent
    /// directory must exist.
    public func writeFile(_ path: String, contents: [UInt8], mode: UInt32 = 0o644) async throws {
        let path = try Self.checkedPath(path)
        let (parent, name) = Self.split(path)
        guard !name.isEmpty else { throw CorralError.invalidArgument("\(path) names a directory, not a file") }
        if let files = controlFiles {
            try await files.write(path, mode: mode, from: ChunkSequence(contents))
            return
        }
        let owner = self.owner
        let tar = try await runOnThread(name: "corral-tar") {
            let writer = try TarWriter()
            try writer.addFile(path: name, contents: contents, mode: mode, uid: owner.uid, gid: owner.gid)
            return try writer.finish()
        }
        try await putArchive(at: parent, body: .bytes(tar), describing: path)
    }

    /// Writes `path` from `source`, a chunk at a time, whatever its size, replacing any file
    /// there once all of it arrived. The parent directory must exist.
    public func writeFile<Source: AsyncSequence>(_ path: String, mode: UInt32 = 0o644, from source: Source)
        async throws where Source.Element == [UInt8]
    {
        let path = try Self.checkedPath(path)
        guard !Self.split(path).1.isEmpty else {
            throw CorralError.invalidArgument("\(path) names a directory, not a file")
        }
        if let files = controlFiles {
            try await files.write(path, mode: mode, from: source)
            return
        }
        // A tar entry announces its size first: spool to a host file, then send that.
        if let existing = try await stat(path), existing.isDirectory {
            throw CorralError.invalidArgument("\(path) is a directory")
        }
        let spool = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-spool-\(UUID().uuidString.prefix(8))", isDirectory: true)
        try FileManager.default.createDirectory(at: spool, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: spool) }
        let file = spool.appendingPathComponent(Self.split(path).1)
        guard FileManager.default.createFile(atPath: file.path, contents: nil) else {
            throw CorralError(.io, "cannot spool \(path) on the host in \(spool.path)")
        }
        let handle = try FileHandle(forWritingTo: file)
        do {
            for try await chunk in source { try handle.write(contentsOf: chunk) }
            try handle.close()
        } catch {
            try? handle.close()
            throw error
        }
        try FileManager.default.setAttributes([.posixPermissions: Int(mode & 0o7777)], ofItemAtPath: file.path)
        try await copyIn(from: file, to: path)
    }

    /// The entries of the directory `path`, by name.
    public func listDirectory(_ path: String) async throws -> [SandboxFileInfo] {
        let path = try Self.checkedPath(path)
        if let files = controlFiles {
            return try await files.list(path).map(SandboxFileInfo.init(status:)).sorted { $0.name < $1.name }
        }
        let result = try await run(
            SandboxCommand(
                ["find", path, "-mindepth", "1", "-maxdepth", "1", "-printf", "%f\\0%y\\0%s\\0%m\\0%T@\\0%l\\0"],
                timeout: .seconds(60)), limit: 64 << 20)
        guard result.status.exitCode == 0 else {
            throw CorralError(.notFound, "sandbox \(id): cannot list \(path): \(result.stderr.prefix(300))")
        }
        return SandboxFileInfo.parseFind(result.stdout).sorted { $0.name < $1.name }
    }

    /// Makes the directory `path` with `mode`; with `parents`, missing parents too, and an
    /// existing directory is fine.
    public func makeDirectory(_ path: String, mode: UInt32 = 0o755, parents: Bool = false) async throws {
        let path = try Self.checkedPath(path)
        if let files = controlFiles {
            try await files.makeDirectory(path, mode: mode, parents: parents)
            return
        }
        try await runChecked(
            ["mkdir"] + (parents ? ["-p"] : []) + ["-m", String(mode & 0o7777, radix: 8), "--", path],
            doing: "make the directory \(path)")
    }

    /// Removes the file, link or empty directory at `path`; with `recursive`, a directory and
    /// everything in it (links are removed, never followed).
    public func removePath(_ path: String, recursive: Bool = false) async throws {
        let path = try Self.checkedPath(path)
        guard path != "/" else { throw CorralError.invalidArgument("the sandbox's root cannot be removed") }
        if let files = controlFiles {
            try await files.remove(path, recursive: recursive)
            return
        }
        try await runChecked(
            recursive
                ? ["rm", "-r", "--", path]
                : [
                    "sh", "-c", "if [ -d \"$1\" ] && [ ! -L \"$1\" ]; then rmdir -- \"$1\"; else rm -- \"$1\"; fi",
                    "sh", path,
                ],
            doing: "remove \(path)")
    }

    /// Renames `path` to `target` (both in the sandbox), replacing a file at `target`.
    public func rename(_ path: String, to target: String) async throws {
        let path = try Self.checkedPath(path)
        let target = try Self.checkedPath(target)
        if let files = controlFiles {
            try await files.rename(path, to: target)
            return
        }
        try await runChecked(["mv", "-T", "--", path, target], doing: "rename \(path) to \(target)")
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
        if let files = controlFiles {
            return try await HostArchive.stream(source, as: name, ownership: nil) { tar in
                try await files.tarIn(directory, from: tar)
            }
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
        guard let files = controlFiles else {
            return try await HostArchive.stream(producing: { writer in
                let reader = try TarReader(pull: pull)
                return try TarValidator.validate(from: reader, into: writer, options: .init(ownership: owner)).bytes
            }) { tar in
                try await putArchive(at: directory, body: .stream(tar), describing: directory)
            }
        }
        // corral-init unpacks as the bytes come, so the whole archive is checked first (spooled
        // to a host file): a refused entry late in it must leave nothing behind.
        let spool = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-spool-\(UUID().uuidString.prefix(8)).tar")
        defer { try? FileManager.default.removeItem(at: spool) }
        let bytes = try await runOnThread(name: "corral-tar") {
            guard FileManager.default.createFile(atPath: spool.path, contents: nil) else {
                throw CorralError(.io, "cannot spool the archive on the host at \(spool.path)")
            }
            let handle = try FileHandle(forWritingTo: spool)
            defer { try? handle.close() }
            let writer = try TarWriter(sink: { try handle.write(contentsOf: $0) })
            let reader = try TarReader(pull: pull)
            let bytes = try TarValidator.validate(from: reader, into: writer, options: .init(ownership: owner)).bytes
            _ = try writer.finish()
            return bytes
        }
        try await files.tarIn(directory, from: HostFileChunks(url: spool))
        return bytes
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
        if let files = controlFiles {
            try await files.tarOut(path, into: consume)
            return
        }
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

    static func tooLarge(_ path: String, _ size: Int64, _ limit: Int) -> CorralError {
        CorralError(
            .resourceExhausted,
            "\(path) is \(ByteSize(bytes: size)); the limit is \(ByteSize(bytes: Int64(limit)))")
    }

    private func runChecked(_ arguments: [String], doing what: String) async throws {
        let result = try await run(SandboxCommand(arguments, timeout: .seconds(60)), limit: 4096)
        guard result.status.exitCode == 0 else {
            let reason =
                result.stderr.split(separator: "\n").first.map(String.init) ?? "status \(result.status.exitCode)"
            throw CorralError(.io, "sandbox \(id): cannot \(what): \(reason)")
        }
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

/// An entry of a sandbox directory.
public struct SandboxFileInfo: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        case file, directory, symlink, other
    }

    public var name: String
    public var kind: Kind
    public var size: Int64
    /// Permission bits, with setuid, setgid and sticky.
    public var mode: UInt32
    public var modified: Date
    /// Where a symbolic link points.
    public var linkTarget: String?

    init(status: FileStatus) {
        name = status.name
        kind =
            switch status.kind {
            case .file: .file
            case .directory: .directory
            case .symlink: .symlink
            case .other: .other
            }
        size = status.size
        mode = status.mode
        modified = Date(timeIntervalSince1970: Double(status.modifiedNanoseconds) / 1e9)
        linkTarget = status.kind == .symlink ? status.linkTarget : nil
    }

    init(name: String, kind: Kind, size: Int64, mode: UInt32, modified: Date, linkTarget: String?) {
        self.name = name
        self.kind = kind
        self.size = size
        self.mode = mode
        self.modified = modified
        self.linkTarget = linkTarget
    }

    /// Parses `find -printf '%f\0%y\0%s\0%m\0%T@\0%l\0'`.
    static func parseFind(_ output: String) -> [SandboxFileInfo] {
        let fields = output.split(separator: "\0", omittingEmptySubsequences: false).map(String.init)
        var entries: [SandboxFileInfo] = []
        var index = 0
        while index + 6 <= fields.count {
            let kind: Kind =
                switch fields[index + 1] {
                case "f": .file
                case "d": .directory
                case "l": .symlink
                default: .other
                }
            entries.append(
                SandboxFileInfo(
                    name: fields[index], kind: kind, size: Int64(fields[index + 2]) ?? 0,
                    mode: UInt32(fields[index + 3], radix: 8) ?? 0,
                    modified: Date(timeIntervalSince1970: Double(fields[index + 4]) ?? 0),
                    linkTarget: kind == .symlink ? fields[index + 5] : nil))
            index += 6
        }
        return entries
    }
}

extension PathStat {
    /// The engine's description of a path, from corral-init's. `PathStat` keeps its
    /// memberwise initialiser to DockerEngine, so this goes through its Codable form.
    init(status: FileStatus) throws {
        var mode = status.mode & 0o777
        if status.mode & 0o4000 != 0 { mode |= 1 << 23 }
        if status.mode & 0o2000 != 0 { mode |= 1 << 22 }
        if status.mode & 0o1000 != 0 { mode |= 1 << 20 }
        switch status.kind {
        case .directory: mode |= 1 << 31
        case .symlink: mode |= 1 << 27
        case .file, .other: break
        }
        var object: [String: JSONValue] = [
            "name": .string(status.name), "size": .int(status.size), "mode": .int(Int64(mode)),
        ]
        if status.kind == .symlink { object["linkTarget"] = .string(status.linkTarget) }
        self = try JSONDecoder().decode(PathStat.self, from: JSONEncoder().encode(JSONValue.object(object)))
    }
}

/// A host file, read a chunk at a time as an async sequence.
struct HostFileChunks: AsyncSequence, Sendable {
    typealias Element = [UInt8]
    let url: URL

    struct AsyncIterator: AsyncIteratorProtocol {
        let handle: FileHandle?
        var failure: (any Error)?

        mutating func next() async throws -> [UInt8]? {
            if let failure { throw failure }
            guard let handle, let data = try handle.read(upToCount: 64 << 10), !data.isEmpty else {
                try? handle?.close()
                return nil
            }
            return Array(data)
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        do {
            return AsyncIterator(handle: try FileHandle(forReadingFrom: url))
        } catch {
            return AsyncIterator(handle: nil, failure: error)
        }
    }
}
