import CorralCore
import CorralGateway
import Crypto
import Foundation
import Synchronization

/// A list kept in one JSON file of the state directory (tenants, worker tokens): the
/// `RecordList` of the file store. Every change
/// is a read-modify-write under an flock on `FILE.lock`, so that commands in several processes
/// at once, and a running service, never lose one another's changes. Each change opens the lock
/// file anew, and flock locks belong to an open file, so two tasks of one process are
/// serialised the same way. Readers take no lock: the file is replaced by rename, whole, after
/// an fsync.
package final class LockedJSONFile<Element: Codable & Sendable>: RecordList, Sendable {
    package let file: URL
    /// What the file holds, in errors: "tenants file".
    package let what: String
    private var lockFile: URL { file.appendingPathExtension("lock") }
    /// The file's bytes at the last read and what they held: a reader parses the file again
    /// only when the bytes changed. Bytes, not the modification time, because two writes within
    /// one tick of the file system's clock would look alike.
    private let cache = Mutex<(bytes: Data?, elements: [Element])>((nil, []))

    package init(file: URL, what: String) {
        self.file = file
        self.what = what
    }

    package var location: String { file.path }

    package func load() async throws -> [Element] { try loadNow() }

    /// The lock, the read, the write and its two fsyncs run on a thread of their own: on the
    /// cooperative pool (two threads on two cores) a slow disk would stall every task of the
    /// process meanwhile.
    package func modify(_ change: (inout [Element]) throws -> Void) async throws {
        try await runBorrowedOnThread(name: "corral-record-list") { try self.modifyNow(change) }
    }

    private func modifyNow(_ change: (inout [Element]) throws -> Void) throws {
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let descriptor = open(lockFile.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw CorralError(.io, "cannot open \(lockFile.path): \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        while flock(descriptor, LOCK_EX) != 0 {
            guard errno == EINTR else {
                throw CorralError(.io, "cannot lock \(lockFile.path): \(String(cString: strerror(errno)))")
            }
        }
        defer { flock(descriptor, LOCK_UN) }
        var elements = try loadNow()
        try change(&elements)
        try save(elements)
    }

    private func loadNow() throws -> [Element] {
        guard let data = FileManager.default.contents(atPath: file.path) else { return [] }
        if let cached = cache.withLock({ $0.bytes == data ? $0.elements : nil }) { return cached }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            let elements = try decoder.decode([Element].self, from: data)
            cache.withLock { $0 = (data, elements) }
            return elements
        } catch {
            throw CorralError(
                .corrupted, "\(file.path) is not a valid \(what)", hint: "restore it from a backup", underlying: error)
        }
    }

    private func save(_ elements: [Element]) throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        // Whole or not at all, and durable once this returns (the gateway's vault writes alike).
        try AtomicFile.write(Array(try encoder.encode(elements)), to: file)
    }
}

/// Bearer tokens as corral makes and keeps them: `corral_` and 43 base64url characters, stored
/// only as a SHA-256, compared in constant time.
package enum BearerToken {
    package static func make() -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        var generator = SystemRandomNumberGenerator()
        for index in bytes.indices { bytes[index] = generator.next() }
        return "corral_"
            + Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    package static func hash(_ token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// The last of `candidates` whose stored hash equals the presented token's; every candidate
    /// is compared whole, so the time does not tell how many characters matched.
    package static func match<T>(_ token: String, in candidates: [T], hash storedHash: (T) -> String) -> T? {
        let presented = Array(hash(token).utf8)
        var match: T?
        for candidate in candidates {
            let stored = Array(storedHash(candidate).utf8)
            guard stored.count == presented.count else { continue }
            var difference: UInt8 = 0
            for index in stored.indices { difference |= stored[index] ^ presented[index] }
            if difference == 0 { match = candidate }
        }
        return match
    }
}
