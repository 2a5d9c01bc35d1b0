import CorralCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The host-side directory of sandboxes: `<directory>/<id>/` holds `record.json`, the claim
/// marker, the activity stamp and the gateway directory bind-mounted into the sandbox.
///
/// Records are written atomically (write, fsync, rename, fsync the directory), so a crash
/// leaves the old record or the new one, never a torn one. All methods are synchronous and
/// short; they are safe to call from any task. Async code writes through `save`, which keeps
/// the fsyncs off the cooperative pool.
public struct SandboxRecordStore: Sendable, Hashable {
    public let directory: URL

    public init(directory: URL) {
        self.directory = directory
    }

    static let recordFile = "record.json"
    /// Made with O_EXCL by whoever takes a pool member out of the pool (a claimer, or the pool
    /// retiring it). The engine's rename is not a compare-and-swap when two claimers rename to
    /// different names, so this file is: exactly one creator succeeds.
    static let claimFile = "claim"
    /// Touched before and after every command; its mtime is the sandbox's last activity.
    static let activityFile = "activity"
    static let instanceFile = ".instance"

    public func sandboxDirectory(_ id: SandboxID) -> URL {
        directory.appendingPathComponent(id.rawValue, isDirectory: true)
    }

    func path(_ id: SandboxID, _ file: String) -> String {
        sandboxDirectory(id).appendingPathComponent(file).path
    }

    // MARK: Instance

    /// The id of the corral instance this state directory belongs to, made on first use.
    public func instanceID() throws -> String {
        let file = directory.appendingPathComponent(Self.instanceFile).path
        if let existing = try? String(contentsOfFile: file, encoding: .utf8) {
            let trimmed = existing.trimmingCharacters(in: .whitespacesAndNewlines)
            if SandboxID(trimmed) != nil { return trimmed }
        }
        try makeDirectory(directory)
        // Write aside, then link: of two processes starting at once, one link wins and both
        // read the winner's id.
        let fresh = "in-" + SandboxID.random().rawValue.dropFirst(3)
        let temporary = file + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        try writeFile(temporary, Data((fresh + "\n").utf8), sync: true)
        defer { unlink(temporary) }
        if link(temporary, file) != 0, errno != EEXIST {
            throw CorralError(.io, "cannot write \(file): \(String(cString: strerror(errno)))")
        }
        let stored = (try? String(contentsOfFile: file, encoding: .utf8))?.trimmingCharacters(
            in: .whitespacesAndNewlines)
        guard let stored, SandboxID(stored) != nil else {
            throw CorralError(
                .corrupted, "\(file) does not hold an instance id", hint: "remove it; corral makes a new one")
        }
        return stored
    }

    // MARK: Records

    /// `write` on a thread of its own: its two fsyncs wait on the disk, and on the cooperative
    /// pool (two threads on two cores) a slow disk would stall every task of the process.
    public func save(_ record: SandboxRecord) async throws {
        try await runOnThread(name: "corral-record") { try self.write(record) }
    }

    /// Writes the record atomically and durably.
    public func write(_ record: SandboxRecord) throws {
        let sandboxDirectory = sandboxDirectory(record.id)
        try makeDirectory(sandboxDirectory)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        let data: Data
        do {
            data = try encoder.encode(record)
        } catch {
            throw CorralError(.internalError, "cannot encode the record of sandbox \(record.id)", underlying: error)
        }
        let final = path(record.id, Self.recordFile)
        let temporary = final + ".tmp"
        try writeFile(temporary, data, sync: true)
        guard rename(temporary, final) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw CorralError(
                .io, "cannot write \(final): \(reason)", hint: "check the state directory's disk and permissions")
        }
        try syncDirectory(sandboxDirectory.path)
    }

    /// The record, or nil when there is none. A record that cannot be read is an error.
    public func read(_ id: SandboxID) throws -> SandboxRecord? {
        let file = path(id, Self.recordFile)
        guard let data = FileManager.default.contents(atPath: file) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let record: SandboxRecord
        do {
            record = try decoder.decode(SandboxRecord.self, from: data)
        } catch {
            throw CorralError(.corrupted, "the record of sandbox \(id) cannot be read (\(file))", underlying: error)
        }
        guard record.version <= SandboxRecord.currentVersion, record.id == id else {
            throw CorralError(
                .corrupted, "the record at \(file) is version \(record.version) of sandbox \(record.id)",
                hint: "a newer corral wrote it; upgrade corral")
        }
        return record
    }

    /// Removes everything the host keeps for the sandbox.
    public func remove(_ id: SandboxID) {
        SandboxHostDirectory.remove(sandboxDirectory(id))
    }

    /// Ids of every sandbox directory present.
    public func ids() -> [SandboxID] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.compactMap(SandboxID.init).sorted()
    }

    /// When the sandbox's directory was made (its mtime), or nil when it is absent.
    func directoryDate(_ id: SandboxID) -> Date? {
        modificationDate(sandboxDirectory(id).path)
    }

    // MARK: Claim marker

    /// Takes the sandbox out of its pool: true for exactly one caller, across processes.
    public func takeClaim(_ id: SandboxID) -> Bool {
        let directory = sandboxDirectory(id)
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let fd = open(path(id, Self.claimFile), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        let line = ProcessIdentity.current + "\n"
        _ = line.withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
        return true
    }

    /// Puts a member back (a claim that failed before it renamed the container).
    func releaseClaim(_ id: SandboxID) {
        unlink(path(id, Self.claimFile))
    }

    /// When the claim marker was made; nil when the sandbox was never claimed.
    func claimDate(_ id: SandboxID) -> Date? {
        modificationDate(path(id, Self.claimFile))
    }

    // MARK: Activity

    /// Records activity now (the file's mtime). Cheap, and not synced: after a crash an idle
    /// ttl counts from the last activity the disk kept.
    public func touch(_ id: SandboxID) {
        let file = path(id, Self.activityFile)
        if utimensat(AT_FDCWD, file, nil, 0) == 0 { return }
        let fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        if fd >= 0 { close(fd) }
    }

    /// Sets the sandbox directory's time to now: a sandbox still being made (see
    /// `directoryDate`) is not taken for an orphan.
    func touchDirectory(_ id: SandboxID) {
        _ = utimensat(AT_FDCWD, sandboxDirectory(id).path, nil, 0)
    }

    public func lastActivity(_ id: SandboxID) -> Date? {
        modificationDate(path(id, Self.activityFile))
    }

    // MARK: Plumbing

    private func modificationDate(_ path: String) -> Date? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Date(
            timeIntervalSince1970: TimeInterval(info.st_mtim.tv_sec) + TimeInterval(info.st_mtim.tv_nsec) / 1e9)
    }

    private func makeDirectory(_ url: URL) throws {
        try PrivateDirectory.make(url)
    }

    private func writeFile(_ path: String, _ data: Data, sync: Bool) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw CorralError(.io, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let failure: Int32? = data.withUnsafeBytes { raw -> Int32? in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress?.advanced(by: offset), raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                offset += n
            }
            return nil
        }
        if let failure {
            unlink(path)
            throw CorralError(
                .io, "cannot write \(path): \(String(cString: strerror(failure)))", hint: "check free disk space")
        }
        if sync, fsync(fd) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(path)
            throw CorralError(.io, "cannot sync \(path): \(reason)")
        }
    }

    private func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw CorralError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw CorralError(.io, "cannot sync \(path): \(String(cString: strerror(errno)))") }
    }
}

extension SandboxRecordStore {
    /// Who took the claim marker (see `ProcessIdentity`), when it says.
    func claimOwner(_ id: SandboxID) -> String? {
        guard let text = try? String(contentsOfFile: path(id, Self.claimFile), encoding: .utf8) else { return nil }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.isEmpty ? nil : trimmed
    }
}
