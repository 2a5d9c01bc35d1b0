import CorralCore
import CorralSandbox
import Synchronization

/// The commands this server started and still follows (a non-detached command while its
/// starter's stream is open), by sandbox and command id. Its stdin and resizes go to the
/// `RunningCommand` that owns it; a command not held here (detached, or started before a
/// restart) is reached with an attach instead.
///
/// The references are weak: the starter's stream owns its command, and a command whose
/// stream never ran is released (and stopped) rather than kept alive by this table.
package final class LiveCommands: Sendable {
    private struct Key: Hashable {
        package var sandbox: SandboxID
        package var command: CommandID
    }

    private struct Entry {
        package weak var command: RunningCommand?
    }

    private let commands = Mutex<[Key: Entry]>([:])

    package func add(_ command: RunningCommand, in sandbox: SandboxID) {
        commands.withLock { table in
            table = table.filter { $0.value.command != nil }
            table[Key(sandbox: sandbox, command: command.id)] = Entry(command: command)
        }
    }

    package func remove(_ command: CommandID, in sandbox: SandboxID) {
        _ = commands.withLock { $0.removeValue(forKey: Key(sandbox: sandbox, command: command)) }
    }

    package func command(_ command: CommandID, in sandbox: SandboxID) -> RunningCommand? {
        commands.withLock { $0[Key(sandbox: sandbox, command: command)]?.command }
    }
}
