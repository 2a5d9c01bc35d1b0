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

    var createdDate: Date { Timestamp.parse(created).map { Timestamp.date(nanoseconds: $0) } ?? Date(timeIntervalSince1970: 0) }

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
            throw CorralError(.corrupted, "session \(id) has no \(paths.manifest)",
                hint: "the directory \(paths.directory) is not a complete session; move it out of the state directory")
        }
        let manifest: SessionManifest
        do {
            manifest = try JSONDecoder().decode(SessionManifest.self, from: Data(bytes))
        } catch {
            throw CorralError(.corrupted, "session \(id): \(paths.manifest) cannot be read: \(error)",
                hint: "restore the file from a backup, or move the session directory aside")
        }
        guard manifest.format == currentFormat else {
            throw CorralError(.unsupported, "session \(id) has format \(manifest.format); this corral reads format \(currentFormat)",
                hint: "use the corral version that wrote it")
        }
        guard manifest.id == id else {
            throw CorralError(.corrupted, "\(paths.manifest) names session \(manifest.id), not \(id)",
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
            throw CorralError(.corrupted, "session \(id) has no lease file \(paths.lease)",
                hint: "write {\"format\":1,\"session\":\"\(id)\",\"epoch\":N,\"since\":\"...\"} with the last epoch you know, or move the session aside")
        }
        let bytes = try FileIO.readWholeFile(paths.lease, limit: 64 * 1024)
        guard let record = try? JSONDecoder().decode(LeaseRecord.self, from: Data(bytes)), record.session == id else {
            throw CorralError(.corrupted, "session \(id): lease file \(paths.lease) cannot be read",
                hint: "it is replaced atomically, so damage means a disk problem; restore it or move the session aside")
        }
        return record
    }

    static func write(epoch: UInt64, paths: SessionPaths, id: SessionID) throws {
        let record = LeaseRecord(format: 1, session: id, epoch: epoch, since: Timestamp.format(nanoseconds: Timestamp.nowNanoseconds()))
        try FileIO.writeAtomically(try record.encoded(), to: paths.lease, directory: paths.directory)
    }
}

/// `lock`: the file every writer holds an exclusive flock on while it appends or wakes, in
/// any process. Its 16 bytes (`CORRALLK`, u64 epoch) mirror the lease epoch so that an
/// append checks its lease with one pread. A wake raises the mirror before it replaces the
/// lease file, so the mirror is never behind a lease anyone has been given; on open, the
/// store raises it to the lease file's epoch if a machine crash lost it.
enum LockFile {
    static let magic: [UInt8] = Array("CORRALLK".utf8)
    static let size = 16

    static func encode(epoch: UInt64) -> [UInt8] {
        var bytes = magic
        bytes.appendLittleEndian(epoch)
        return bytes
    }

    /// The mirrored epoch, or 0 when the file is empty or damaged.
    static func readEpoch(_ file: OpenFile) throws -> UInt64 {
        var raw = (UInt64(0), UInt64(0))
        let got = try withUnsafeMutableBytes(of: &raw) { try FileIO.pread(file.fd, into: $0, at: 0, path: file.path) }
        guard got == size else { return 0 }
        return withUnsafeBytes(of: raw) { bytes in
            bytes.prefix(8).elementsEqual(magic) ? bytes.loadLittleEndian(UInt64.self, at: 8) : 0
        }
    }

    static func writeEpoch(_ epoch: UInt64, to file: OpenFile) throws {
        try FileIO.pwrite(file.fd, encode(epoch: epoch), at: 0, path: file.path)
    }
}
