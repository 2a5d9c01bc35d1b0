import CorralCore
import Foundation

/// The paths of one session's directory. Built only from a validated `SessionID`, which
/// cannot hold `/` or `.`, so no path can leave the store's directory.
struct SessionPaths: Sendable {
    let directory: String

    init(root: String, id: SessionID) {
        self.directory = root + "/" + id.rawValue
    }

    init(directory: String) {
        self.directory = directory
    }

    var manifest: String { directory + "/session.json" }
    var lease: String { directory + "/lease" }
    var lock: String { directory + "/lock" }
    func segment(_ firstSeq: UInt64) -> String { directory + "/" + LogFormat.segmentName(firstSeq) }
    func index(_ firstSeq: UInt64) -> String { directory + "/" + LogFormat.indexName(firstSeq) }
}

/// `session.json`: what a session is, written once at creation and never changed.
struct SessionManifest: Codable, Sendable {
    var format: Int
    var id: SessionID
    var tenant: TenantID
    /// RFC 3339, UTC, microseconds.
    var created: String
    var metadata: [String: String]
    var forkedFrom: ForkOrigin?
    /// Size past which the next append starts a new segment. Stored per session so that every
    /// process writing to it rolls at the same point.
    var segmentBytes: UInt64

    static let currentFormat = 1

    var createdDate: Date {
        Timestamp.parse(created).map { Timestamp.date(nanoseconds: $0) } ?? Date(timeIntervalSince1970: 0)
    }

    func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(self)) + [0x0A]
    }

    static func read(_ paths: SessionPaths, id: SessionID) throws -> SessionManifest {
        let bytes: [UInt8]
        do {
            bytes = try FileIO.readWholeFile(paths.manifest)
        } catch let error as CorralError where error.code == .io && !FileIO.exists(paths.manifest) {
            throw CorralError(
                .corrupted, "session \(id) has no \(paths.manifest)",
                hint: "the directory \(paths.directory) is not a complete session; move it out of the state directory")
        }
        let manifest: SessionManifest
        do {
            manifest = try JSONDecoder().decode(SessionManifest.self, from: Data(bytes))
        } catch {
            throw CorralError(
                .corrupted, "session \(id): \(paths.manifest) cannot be read: \(error)",
                hint: "restore the file from a backup, or move the session directory aside")
        }
        guard manifest.format == currentFormat else {
            throw CorralError(
                .unsupported, "session \(id) has format \(manifest.format); this corral reads format \(currentFormat)",
                hint: "use the corral version that wrote it")
        }
        guard manifest.id == id else {
            throw CorralError(
                .corrupted, "\(paths.manifest) names session \(manifest.id), not \(id)",
                hint: "the directory was renamed by hand; rename it back to \(manifest.id)")
        }
        return manifest
    }
}

/// `lease`: the durable epoch. Replaced atomically by each wake.
struct LeaseRecord: Codable, Sendable {
    var format: Int
    var session: SessionID
    var epoch: UInt64
    /// When this epoch began (RFC 3339).
    var since: String

    func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(self)) + [0x0A]
    }

    static func read(_ paths: SessionPaths, id: SessionID) throws -> LeaseRecord {
        guard FileIO.exists(paths.lease) else {
            throw CorralError(
                .corrupted, "session \(id) has no lease file \(paths.lease)",
                hint:
                    "write {\"format\":1,\"session\":\"\(id)\",\"epoch\":N,\"since\":\"...\"} with the last epoch you know, or move the session aside"
            )
        }
        let bytes = try FileIO.readWholeFile(paths.lease, limit: 64 * 1024)
        guard let record = try? JSONDecoder().decode(LeaseRecord.self, from: Data(bytes)), record.session == id else {
            throw CorralError(
                .corrupted, "session \(id): lease file \(paths.lease) cannot be read",
                hint: "it is replaced atomically, so damage means a disk problem; restore it or move the session aside")
        }
        return record
    }

    static func write(epoch: UInt64, paths: SessionPaths, id: SessionID) throws {
        let record = LeaseRecord(
            format: 1, session: id, epoch: epoch, since: Timestamp.format(nanoseconds: Timestamp.nowNanoseconds()))
        try FileIO.writeAtomically(try record.encoded(), to: paths.lease, directory: paths.directory)
    }
}

/// `lock`: the file every writer holds an exclusive flock on while it appends or wakes, in
/// any process, mapped into memory so that the checks an append makes cost no system call.
///
/// Its 32 bytes: `CORRALLK`, then three u64s.
/// - The lease epoch, mirrored. A wake raises it before it replaces the lease file, so it is
///   never behind a lease anyone has been given; on open, the store raises it to the lease
///   file's epoch if a machine crash lost it.
/// - The end of the log as writers know it: the first seq of the last segment and a byte
///   offset in it. A writer moves it past the bytes it is about to write before it writes
///   them, so a writer whose own idea of the end equals it knows that nobody else has
///   written since, without looking at the files; any other value sends it to read what
///   changed. Recovery sets it from the files.
final class SessionLock: @unchecked Sendable {
    // @unchecked: the mapping is read and written under the flock (the epoch is also read
    // without it: an aligned 8-byte load cannot tear).
    static let magic: [UInt8] = Array("CORRALLK".utf8)
    static let size = 32

    let file: OpenFile
    private let mapping: UnsafeMutableRawPointer?

    /// Opens (or creates) the lock file of a session directory.
    init(path: String) throws {
        let file = try OpenFile(path: path, flags: O_RDWR | O_CREAT)
        try FileIO.lock(file.fd, path: path)
        do {
            defer { FileIO.unlock(file.fd) }
            if try file.size() < UInt64(Self.size) {
                let existing = try FileIO.pread(file.fd, count: Self.size, at: 0, path: path)
                let epoch =
                    existing.count >= 16 && Array(existing.prefix(8)) == Self.magic
                    ? existing.withUnsafeBytes { $0.loadLittleEndian(UInt64.self, at: 8) } : 0
                try FileIO.pwrite(file.fd, Self.encode(epoch: epoch), at: 0, path: path)
            }
        }
        let mapped = mmap(nil, Self.size, PROT_READ | PROT_WRITE, MAP_SHARED, file.fd, 0)
        self.file = file
        self.mapping = mapped == UnsafeMutableRawPointer(bitPattern: -1) ? nil : mapped
    }

    deinit {
        if let mapping { munmap(mapping, Self.size) }
    }

    static func encode(epoch: UInt64) -> [UInt8] {
        var bytes = magic
        bytes.appendLittleEndian(epoch)
        bytes.appendLittleEndian(UInt64(0))
        bytes.appendLittleEndian(UInt64(0))
        return bytes
    }

    private func load(_ offset: Int) throws -> UInt64 {
        if let mapping { return UInt64(littleEndian: mapping.load(fromByteOffset: offset, as: UInt64.self)) }
        let bytes = try FileIO.pread(file.fd, count: 8, at: UInt64(offset), path: file.path)
        return bytes.count == 8 ? bytes.withUnsafeBytes { $0.loadLittleEndian(UInt64.self, at: 0) } : 0
    }

    private func store(_ value: UInt64, at offset: Int) throws {
        if let mapping {
            mapping.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self)
        } else {
            var bytes: [UInt8] = []
            bytes.appendLittleEndian(value)
            try FileIO.pwrite(file.fd, bytes, at: UInt64(offset), path: file.path)
        }
    }

    func epoch() throws -> UInt64 { try load(8) }
    func setEpoch(_ epoch: UInt64) throws { try store(epoch, at: 8) }

    /// The log's end as the last writer left it: (first seq of the last segment, offset).
    func end() throws -> (UInt64, UInt64) { (try load(16), try load(24)) }

    func setEnd(_ first: UInt64, _ offset: UInt64) throws {
        try store(first, at: 16)
        try store(offset, at: 24)
    }
}
