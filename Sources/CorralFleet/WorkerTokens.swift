import CorralAPI
import CorralCore
import CorralLink
import CorralService
import CorralSession
import Foundation

/// Worker tokens, kept in a `RecordList` (`$STATE/worker-tokens.json`, or the PostgreSQL
/// store's list `worker-tokens`, which every replica shares): each binds the workers that
/// present it to one group. Only a token's SHA-256 is stored; `corral worker token add --group G` prints
/// the token once.
public final class WorkerTokenRegistry: Sendable {
    public struct Entry: Codable, Sendable, Hashable {
        /// A short name for the token (`wt-` and 8 hex digits), for `token ls` and `token rm`.
        public var id: String
        public var group: String
        public var tokenSHA256: String
        public var created: Date
    }

    private let store: any RecordList<Entry>

    /// The tokens in `$STATE/worker-tokens.json`.
    public convenience init(stateDirectory: URL) {
        self.init(
            list: LockedJSONFile(
                file: stateDirectory.appendingPathComponent("worker-tokens.json"), what: "worker tokens file"))
    }

    package init(list: any RecordList<Entry>) {
        store = list
    }

    /// The tokens where the store keeps the control plane's state: the PostgreSQL store's list
    /// when sessions are there, else `$STATE/worker-tokens.json`.
    public convenience init(store: any SessionStore, stateDirectory: URL) {
        self.init(
            list: SessionStoreSelection.recordList(
                "worker-tokens", what: "worker tokens file", store: store, stateDirectory: stateDirectory))
    }

    /// Adds a token for `group` and returns it with its entry.
    public func add(group: String) async throws -> (token: String, entry: Entry) {
        try WorkerGroup.validate(group)
        let token = BearerToken.make()
        let hash = BearerToken.hash(token)
        let entry = Entry(id: "wt-" + hash.prefix(8), group: group, tokenSHA256: hash, created: Date())
        try await store.modify { $0.append(entry) }
        return (token, entry)
    }

    public func list() async throws -> [Entry] { try await store.load() }

    /// Removes a token by its id: the links of workers that hold it are closed at their next
    /// heartbeat, and their dials refused.
    @discardableResult
    public func remove(id: String) async throws -> Bool {
        var removed = false
        try await store.modify { entries in
            removed = entries.contains { $0.id == id }
            entries.removeAll { $0.id == id }
        }
        return removed
    }

    /// The entry of a presented token (its group is the one it admits to), or nil.
    public func entry(forToken token: String) async throws -> Entry? {
        BearerToken.match(token, in: try await store.load(), hash: \.tokenSHA256)
    }

    /// Whether the token `id` is still kept; true when the file cannot be read (a link is not
    /// cut for a read that failed).
    package func isKept(id: String) async -> Bool {
        (try? await store.load().contains { $0.id == id }) ?? true
    }
}
