import CorralAPI
import CorralCore
import CorralService
import Foundation

/// Worker tokens, kept in `$STATE/worker-tokens.json`: each binds the workers that present it
/// to one group. Only a token's SHA-256 is stored; `corral worker token add --group G` prints
/// the token once.
public final class WorkerTokenRegistry: Sendable {
    public struct Entry: Codable, Sendable, Hashable {
        /// A short name for the token (`wt-` and 8 hex digits), for `token ls` and `token rm`.
        public var id: String
        public var group: String
        public var tokenSHA256: String
        public var created: Date
    }

    private let store: LockedJSONFile<Entry>

    public init(stateDirectory: URL) {
        store = LockedJSONFile(
            file: stateDirectory.appendingPathComponent("worker-tokens.json"), what: "worker tokens file")
    }

    /// Adds a token for `group` and returns it with its entry.
    public func add(group: String) throws -> (token: String, entry: Entry) {
        try WorkerGroup.validate(group)
        let token = BearerToken.make()
        let hash = BearerToken.hash(token)
        let entry = Entry(id: "wt-" + hash.prefix(8), group: group, tokenSHA256: hash, created: Date())
        try store.modify { $0.append(entry) }
        return (token, entry)
    }

    public func list() throws -> [Entry] { try store.load() }

    /// Removes a token by its id: the links of workers that hold it are closed at their next
    /// heartbeat, and their dials refused.
    @discardableResult
    public func remove(id: String) throws -> Bool {
        var removed = false
        try store.modify { entries in
            removed = entries.contains { $0.id == id }
            entries.removeAll { $0.id == id }
        }
        return removed
    }

    /// The entry of a presented token (its group is the one it admits to), or nil.
    public func entry(forToken token: String) throws -> Entry? {
        BearerToken.match(token, in: try store.load(), hash: \.tokenSHA256)
    }

    /// Whether the token `id` is still kept; true when the file cannot be read (a link is not
    /// cut for a read that failed).
    package func isKept(id: String) -> Bool {
        (try? store.load().contains { $0.id == id }) ?? true
    }
}
