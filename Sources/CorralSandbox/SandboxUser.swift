import CorralCore
import Foundation

/// The uid and gid one sandbox's processes run as: its own, taken from a range that no host
/// account uses.
///
/// Why not the image's user (1000): without a user namespace, uid 1000 inside a container is
/// uid 1000 on the host, which is the first account on a Debian machine. That account may
/// ptrace the sandbox's processes and walk into `/proc/PID/root`, and so reach the sandbox's
/// files and its gateway and control sockets. No host account holds a uid of the range, so
/// no host user but root can do that; and two sandboxes share a uid only by a rare hash
/// collision, which gives them nothing either (separate pid and mount namespaces, no
/// network). The uid follows from the sandbox's id alone, so every process that knows the
/// id knows it, without asking the engine.
public struct SandboxUser: Sendable, Hashable, CustomStringConvertible {
    public let uid: UInt32
    public var gid: UInt32 { uid }

    /// The first uid of the range, and how many it holds: 1,000,000,000 to 1,016,777,215.
    /// Far above the accounts a host makes (below 65,536) and the subordinate ranges of
    /// /etc/subuid (100,000 upwards, 65,536 at a time).
    public static let base: UInt32 = 1_000_000_000
    public static let span: UInt32 = 1 << 24

    public init(uid: UInt32) {
        self.uid = uid
    }

    /// The uid of `sandbox`.
    public init(for sandbox: SandboxID) {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in sandbox.rawValue.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        uid = Self.base + UInt32(hash % UInt64(Self.span))
    }

    /// `uid:gid`, as the engine takes it.
    public var description: String { "\(uid):\(gid)" }

    public static func contains(_ id: UInt32) -> Bool { id >= base && id - base < span }

    /// Host accounts (from `passwd`) or groups (from `group`) whose id falls in the range;
    /// corral refuses to make sandboxes while there are any, since that account could reach
    /// them.
    public static func conflictingAccounts(
        passwd: String = "/etc/passwd", group: String = "/etc/group"
    ) -> [String] {
        var found: [String] = []
        for (file, kind) in [(passwd, "user"), (group, "group")] {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: ":", omittingEmptySubsequences: false)
                guard fields.count > 2, let id = UInt32(fields[2]), contains(id) else { continue }
                found.append("\(kind) \(fields[0]) (\(id))")
            }
        }
        return found
    }

    /// Refuses when a host account falls in the range (see `conflictingAccounts`).
    static func checkHostAccounts() throws {
        let conflicts = conflictingAccounts()
        guard conflicts.isEmpty else {
            throw CorralError(
                .conflict,
                "host accounts use uids corral gives sandboxes (\(base) to \(base + span - 1)): "
                    + conflicts.prefix(3).joined(separator: ", "),
                hint: "renumber those accounts; a host account in the range could reach sandboxes' files and sockets")
        }
    }

    /// `/etc/passwd` for the sandbox: the image's user, renumbered. Bind-mounted read-only over
    /// the image's, so that `id`, `whoami`, git and the shell's prompt know the user's name.
    func passwd(name: String, home: String) -> String {
        """
        root:x:0:0:root:/root:/usr/sbin/nologin
        \(name):x:\(uid):\(gid):corral sandbox user:\(home):/bin/bash
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin

        """
    }

    /// `/etc/group` for the sandbox.
    func group(name: String) -> String {
        """
        root:x:0:
        \(name):x:\(gid):
        nogroup:x:65534:

        """
    }
}
