import CorralCore
import CorralSession
import Foundation

extension GlobalOptions {
    /// The session store under the state directory: `<state-dir>/sessions`.
    func sessionStore() -> FileSessionStore {
        FileSessionStore(directory: stateDirectory.appendingPathComponent("sessions", isDirectory: true))
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
