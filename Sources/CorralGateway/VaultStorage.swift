import CorralCore
import Foundation

/// Where the sealed vault is kept: `vault.sealed` in the state directory (`VaultFile`), or a
/// row of the PostgreSQL store's `record_lists` (`VaultRow`), which every replica shares. The
/// vault seals and opens; its storage only keeps bytes.
package protocol VaultStorage: Sendable {
    /// A file's path, or the store's URL (no password) and the row's name: for messages.
    var location: String { get }

    /// The sealed bytes; nil when there is no vault yet.
    func read() async throws -> [UInt8]?

    /// Replaces the sealed bytes with what `change` makes of them (nil: leave them), under a
    /// lock that no other change holds at once, in any process.
    func modify(_ change: ([UInt8]?) throws -> [UInt8]?) async throws
}

/// The vault in a file: read without a lock (it is replaced whole, by rename, after an fsync),
/// changed under an flock on `.NAME.lock` beside it.
package struct VaultFile: VaultStorage {
    let file: URL

    package init(file: URL) { self.file = file }

    package var location: String { file.path }

    private var lockFile: URL {
        file.deletingLastPathComponent().appendingPathComponent(".\(file.lastPathComponent).lock")
    }

    package func read() async throws -> [UInt8]? { try AtomicFile.read(file) }

    package func modify(_ change: ([UInt8]?) throws -> [UInt8]?) async throws {
        let directory = file.deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(
                at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw CorralError(.io, "cannot make the state directory \(directory.path)", underlying: error)
        }
        // The lock, the write and its fsyncs run on a thread of their own, off the cooperative
        // pool, which a slow disk would otherwise stall.
        try await runBorrowedOnThread(name: "corral-vault") {
            try withFileLock(lockFile) {
                guard let sealed = try change(try AtomicFile.read(file)) else { return }
                try AtomicFile.write(sealed, to: file, mode: 0o600)
            }
        }
    }
}

/// The vault in a `RecordList` of one string, the sealed bytes in base64: with PostgreSQL, the
/// row `vault` of `record_lists`, changed under the row's lock.
package struct VaultRow: VaultStorage {
    let list: any RecordList<String>

    package init(list: any RecordList<String>) { self.list = list }

    package var location: String { list.location }

    package func read() async throws -> [UInt8]? {
        try decode(try await list.load())
    }

    package func modify(_ change: ([UInt8]?) throws -> [UInt8]?) async throws {
        try await list.modify { elements in
            guard let sealed = try change(try decode(elements)) else { return }
            elements = [Data(sealed).base64EncodedString()]
        }
    }

    private func decode(_ elements: [String]) throws -> [UInt8]? {
        guard let first = elements.first else { return nil }
        guard elements.count == 1, let data = Data(base64Encoded: first) else {
            throw CorralError(
                .corrupted, "\(location) is not a corral vault",
                hint: "remove it; corral makes a new vault on the next `corral vault put`")
        }
        return Array(data)
    }
}
