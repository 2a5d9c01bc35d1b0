import CorralAPI
import CorralCore
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

    /// Removes a token by its id; workers that hold it are refused from their next connection.
    @discardableResult
    public func remove(id: String) throws -> Bool {
        var removed = false
        try store.modify { entries in
            removed = entries.contains { $0.id == id }
            entries.removeAll { $0.id == id }
        }
        return removed
    }

    /// The group a presented token admits to, or nil.
    public func group(forToken token: String) throws -> String? {
        BearerToken.match(token, in: try store.load(), hash: \.tokenSHA256)?.group
    }
}
