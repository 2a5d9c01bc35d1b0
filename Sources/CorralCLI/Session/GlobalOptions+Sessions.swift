import CorralCore
import CorralService
import CorralSession
import Foundation
import Logging

extension GlobalOptions {
    /// The session store: `CORRAL_STORE_URL` or corral.toml's `[store] url` (PostgreSQL), else
    /// the files under `<state-dir>/sessions`. See `SessionStoreSelection`.
    func sessionStore() async throws -> any SessionStore {
        let configuration = try ConfigurationDiscovery.load(
            explicit: nil, environment: environment, stateDirectory: stateDirectory)
        return try await SessionStoreSelection.open(
            configuration: configuration, environment: environment, stateDirectory: stateDirectory,
            logger: Logger(label: "corral.session-store"))
    }

    /// Runs `body` with the session store open and the state directory, then closes the store:
    /// for commands that change the control plane's lists (tenants, worker tokens), which live
    /// beside the sessions (`TenantRegistry(store:stateDirectory:)`).
    func withSessionStore<T>(_ body: (any SessionStore, URL) async throws -> T) async throws -> T {
        let state = try CommandContext(self).stateDirectory()
        let store = try await sessionStore()
        do {
            let value = try await body(store, state)
            await SessionStoreSelection.close(store)
            return value
        } catch {
            await SessionStoreSelection.close(store)
            throw error
        }
    }
}

/// Writes to stdout without stdio's buffering, so that what is printed is out of the
/// process at once (a killed `append` must never have acknowledged more than it printed).
struct StandardOutput {
    private var pending: [UInt8] = []

    mutating func line(_ text: String) {
        pending.append(contentsOf: text.utf8)
        pending.append(0x0A)
        if pending.count >= 64 * 1024 { flush() }
    }

    mutating func flush() {
        var offset = 0
        while offset < pending.count {
            let written = pending.withUnsafeBytes {
                write(1, $0.baseAddress.map { $0 + offset }, pending.count - offset)
            }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { break }
            offset += written
        }
        pending.removeAll(keepingCapacity: true)
    }
}

enum SessionText {
    /// One event as `show` and `tail` print it for people: seq, time, type, id, data.
    static func line(_ event: Event) -> String {
        let seq = String(event.seq)
        let padded = String(repeating: " ", count: max(0, 6 - seq.count)) + seq
        let data = event.data == .null ? "" : "  " + compactJSON(event.data)
        return "\(padded)  \(event.time.formatted(.iso8601))  \(event.type)  \(event.id)\(data)"
    }

    static func compactJSON(_ value: JSONValue) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "?"
    }
}
