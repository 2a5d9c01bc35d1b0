import CorralAPI
import CorralCore
import CorralLink
import Foundation

/// The control-plane replicas that share one PostgreSQL store, as each publishes itself: its
/// name, the URL workers dial for it, and the workers whose links to it are up. Each replica
/// rewrites its own entry every heartbeat; an entry not rewritten within the workers' grace is
/// stale, and is left out (and dropped at a later write).
///
/// Workers keep a link to every replica listed here (each replica pushes the list to its
/// workers), so that any replica reaches any worker directly. Why not one link and a hop
/// through the replica that holds it: see docs/workers.md, "Several control-plane replicas".
package struct ReplicaDirectory: Sendable {
    package struct Entry: Codable, Sendable, Hashable {
        package var id: String
        /// Where workers dial this replica; nil: nowhere but their own `--server`.
        package var url: String?
        /// The workers whose links to this replica are up.
        package var workers: [String]
        package var seen: Date

        package init(id: String, url: String?, workers: [String], seen: Date = Date()) {
            self.id = id
            self.url = url
            self.workers = workers
            self.seen = seen
        }
    }

    let list: any RecordList<Entry>
    /// An entry older than this is stale.
    let freshWithin: Duration

    package init(list: any RecordList<Entry>, freshWithin: Duration) {
        self.list = list
        self.freshWithin = freshWithin
    }

    /// Writes `entry` (replacing the replica's earlier one) and answers the fresh entries, this
    /// one among them. Entries stale for ten times the window are dropped.
    package func publish(_ entry: Entry) async throws -> [Entry] {
        var fresh: [Entry] = []
        let window = freshWithin.milliseconds / 1000
        try await list.modify { entries in
            entries.removeAll { $0.id == entry.id || entry.seen.timeIntervalSince($0.seen) > window * 10 }
            entries.append(entry)
            entries.sort { $0.id < $1.id }
            fresh = entries.filter { entry.seen.timeIntervalSince($0.seen) <= window }
        }
        return fresh
    }

    /// Takes `entry` out (a replica that stops), so that workers stop dialling it at once.
    package func withdraw(id: String) async throws {
        try await list.modify { entries in entries.removeAll { $0.id == id } }
    }

    /// The URL workers dial for a replica whose worker port is bound at `bound`
    /// (`http(s)://host:port`): `advertise` when set, else `bound` unless its host is a wildcard
    /// address, which names no host. A plain `http://` URL must name a loopback host.
    package static func workerURL(advertise: String?, bound: String) throws -> String? {
        guard let advertise else {
            let host = URLComponents(string: bound)?.host ?? ""
            return ["0.0.0.0", "::", "[::]", ""].contains(host) ? nil : bound
        }
        guard let url = URLComponents(string: advertise), let scheme = url.scheme?.lowercased(),
            let host = url.host, !host.isEmpty, url.port != nil, scheme == "http" || scheme == "https"
        else {
            throw CorralError.invalidArgument(
                "[workers] advertise = \"\(advertise)\" is not a URL workers can dial",
                hint: "use https://HOST:PORT (http:// on loopback only)")
        }
        if scheme == "http", !ListenAddress.isLoopback(host) {
            throw CorralError.invalidArgument(
                "[workers] advertise = \"\(advertise)\" is plain http off loopback",
                hint: "use https://, with [workers] tls_cert and tls_key")
        }
        return advertise
    }
}
