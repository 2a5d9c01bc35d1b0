import CorralCore
import CorralSandbox
import Synchronization

/// The commands envd's process API started, by sandbox and pid: the handle that writes their
/// stdin and resizes their terminal, and the configuration `List` reports. An entry leaves when
/// its command ends. Commands started otherwise (corral's own API) are found by pid through
/// corral-init's list instead; they take signals and re-attaching, not input.
package final class E2BProcessTable: Sendable {
    package struct Key: Hashable, Sendable {
        package var sandbox: SandboxID
        package var pid: Int
    }

    package struct Entry: Sendable {
        package var pump: E2BCommandPump
        package var command: RunningCommand { pump.command }
        /// The ProcessConfig it was started with, as the request gave it.
        package var config: JSONValue
        package var tag: String?
    }

    private let entries = Mutex<[Key: Entry]>([:])

    package func add(_ entry: Entry, sandbox: SandboxID, pid: Int) {
        entries.withLock { $0[Key(sandbox: sandbox, pid: pid)] = entry }
    }

    package func remove(sandbox: SandboxID, pid: Int) {
        _ = entries.withLock { $0.removeValue(forKey: Key(sandbox: sandbox, pid: pid)) }
    }

    package func entry(sandbox: SandboxID, pid: Int) -> Entry? {
        entries.withLock { $0[Key(sandbox: sandbox, pid: pid)] }
    }

    package func pid(sandbox: SandboxID, tag: String) -> Int? {
        entries.withLock { entries in
            entries.first { $0.key.sandbox == sandbox && $0.value.tag == tag }?.key.pid
        }
    }

    package func removeAll(sandbox: SandboxID) {
        entries.withLock { entries in
            for key in entries.keys where key.sandbox == sandbox { entries.removeValue(forKey: key) }
        }
    }
}
