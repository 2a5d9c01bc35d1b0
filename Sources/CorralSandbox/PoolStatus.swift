import CorralCore
import Foundation

/// How a warm pool is doing, as it last saw itself.
public struct PoolStatus: Sendable, Codable, Hashable {
    public enum State: String, Sendable, Codable {
        /// Has not finished its first pass yet.
        case starting
        /// Its last pass worked: members are kept at `min_idle` (or at `max_total`).
        case ready
        /// Its last pass failed (the engine is out, the image is gone, setup fails): it retries
        /// with backoff and recovers by itself.
        case degraded
        case stopped
    }

    public var template: TemplateName
    public var state: State
    public var idle: Int
    public var preparing: Int
    /// Running sandboxes the pool made that are claimed now.
    public var claimed: Int
    public var minIdle: Int
    public var maxTotal: Int
    /// Why the last pass failed, one line.
    public var lastError: String?
    public var consecutiveFailures: Int
    /// Passes done since the pool started.
    public var passes: Int
    public var updated: Date
    /// The process running the pool (see `ProcessIdentity`).
    public var owner: String

    public init(template: SandboxTemplate, updated: Date) {
        self.template = template.name
        self.state = .starting
        self.idle = 0
        self.preparing = 0
        self.claimed = 0
        self.minIdle = template.pool.minIdle
        self.maxTotal = template.pool.maxTotal
        self.consecutiveFailures = 0
        self.passes = 0
        self.updated = updated
        self.owner = ProcessIdentity.current
    }

    /// Whether the process that published this status still runs (nil: cannot tell).
    public var ownerAlive: Bool? { ProcessIdentity.isAlive(owner) }

    // MARK: Published for other processes

    /// Writes the status where `corral pool ls` finds it: `<directory>/<template>.json`.
    func publish(to directory: URL) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        guard let data = try? encoder.encode(self) else { return }
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // Replaced by rename, so a reader never sees half a file. Not synced: it is advisory.
        let file = directory.appendingPathComponent("\(template).json")
        try? data.write(to: file, options: .atomic)
    }

    /// Every status published in `directory`.
    public static func published(in directory: URL) -> [PoolStatus] {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".json") }.sorted().compactMap { name in
            guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent(name).path) else {
                return nil
            }
            return try? decoder.decode(PoolStatus.self, from: data)
        }
    }
}
