import CorralCore
import CorralSandbox
import Foundation
import Synchronization

/// envd's directory watching, by polling: corral-init has no file watcher (inotify) to carry
/// over the control connection, so a watcher lists its directory (and, recursively, those
/// below it) and reports the difference from its last look. Changes that come and go between
/// two looks are not seen, and a file's WRITE is a change of its size or time.
///
/// The non-streaming calls (CreateWatcher, GetWatcherEvents, RemoveWatcher: the sync SDK) look
/// when asked for events; WatchDir (the async SDK) looks every `interval` while its stream is
/// open.
package final class E2BWatchers: Sendable {
    /// What one look saw of one entry.
    package struct Seen: Sendable, Hashable {
        package var isDirectory: Bool
        package var size: Int64
        package var modified: Date
    }

    package struct Watcher: Sendable {
        package var sandbox: SandboxID
        package var path: String
        package var recursive: Bool
        package var snapshot: [String: Seen]
    }

    /// The most watchers one sandbox holds at once through the non-streaming calls (a client
    /// that never removes its watchers fills only its own sandbox's share).
    package static let maxWatchers = 64
    package static let interval: Duration = .milliseconds(200)

    private let watchers = Mutex<[String: Watcher]>([:])

    package func create(sandbox: Sandbox, path: String, recursive: Bool) async throws -> String {
        let snapshot = try await Self.look(sandbox, path: path, recursive: recursive)
        let id = "w-" + E2BSandboxFile.newToken().prefix(16)
        try watchers.withLock { watchers in
            guard watchers.values.count(where: { $0.sandbox == sandbox.id }) < Self.maxWatchers else {
                throw ConnectError(
                    code: "resource_exhausted",
                    message: "sandbox \(sandbox.id) has \(Self.maxWatchers) watchers; remove some first")
            }
            watchers[id] = Watcher(sandbox: sandbox.id, path: path, recursive: recursive, snapshot: snapshot)
        }
        return id
    }

    package func events(_ id: String, sandbox: Sandbox) async throws -> [JSONValue] {
        guard let watcher = watchers.withLock({ $0[id] }), watcher.sandbox == sandbox.id else {
            throw ConnectError.notFound("watcher \(id.prefix(40)) not found")
        }
        let now = try await Self.look(sandbox, path: watcher.path, recursive: watcher.recursive)
        watchers.withLock { $0[id]?.snapshot = now }
        return Self.difference(from: watcher.snapshot, to: now)
    }

    package func remove(_ id: String, sandbox: Sandbox) throws {
        try watchers.withLock { watchers in
            guard watchers[id]?.sandbox == sandbox.id else {
                throw ConnectError.notFound("watcher \(id.prefix(40)) not found")
            }
            watchers.removeValue(forKey: id)
        }
    }

    /// Paths under `path`, relative to it, with what was seen of each.
    package static func look(_ sandbox: Sandbox, path: String, recursive: Bool) async throws -> [String: Seen] {
        guard let stat = try await sandbox.stat(path) else { throw ConnectError.notFound("path \(path) not found") }
        guard stat.isDirectory else { throw ConnectError.invalidArgument("path \(path) is not a directory") }
        var seen: [String: Seen] = [:]
        var pending: [(String, String, Int)] = [(path, "", 1)]
        while let (directory, prefix, level) = pending.first {
            pending.removeFirst()
            guard let listing = try? await sandbox.listDirectory(directory) else { continue }
            for file in listing {
                let name = prefix + file.name
                seen[name] = Seen(isDirectory: file.kind == .directory, size: file.size, modified: file.modified)
                guard seen.count < E2BFilesystemService.maxEntries else { return seen }
                if recursive, file.kind == .directory, level < E2BFilesystemService.maxDepth {
                    pending.append((E2BFilesystemService.join(directory, file.name), name + "/", level + 1))
                }
            }
        }
        return seen
    }

    /// FilesystemEvents, in envd's names: a new entry is CREATE (and WRITE, when a file has
    /// content), a changed file WRITE, a gone entry REMOVE.
    package static func difference(from before: [String: Seen], to after: [String: Seen]) -> [JSONValue] {
        var events: [JSONValue] = []
        func event(_ name: String, _ type: String) {
            events.append(.object(["name": .string(name), "type": .string(type)]))
        }
        for name in after.keys.sorted() {
            guard let now = after[name] else { continue }
            if let then = before[name] {
                if !now.isDirectory, now.size != then.size || now.modified != then.modified {
                    event(name, "EVENT_TYPE_WRITE")
                }
            } else {
                event(name, "EVENT_TYPE_CREATE")
                if !now.isDirectory, now.size > 0 { event(name, "EVENT_TYPE_WRITE") }
            }
        }
        for name in before.keys.sorted() where after[name] == nil {
            event(name, "EVENT_TYPE_REMOVE")
        }
        return events
    }
}
