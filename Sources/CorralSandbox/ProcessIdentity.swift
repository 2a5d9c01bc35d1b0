import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Names a process so that another process can tell, later, whether it still runs: host,
/// boot id, pid and the pid's start time (so a reused pid is not mistaken for the original).
///
/// Written into claim markers and onto containers still being made, so that after a crash
/// (kill -9) a new process removes what the dead one left half-done at once, instead of
/// waiting out a grace period.
enum ProcessIdentity {
    /// This process.
    static let current: String = {
        let pid = getpid()
        return "\(hostname())/\(bootID())/\(pid)/\(startTime(of: pid) ?? "?")"
    }()

    /// true when the process runs, false when it surely does not, nil when this host cannot
    /// tell (another host's process, or an identity it cannot read).
    static func isAlive(_ identity: String) -> Bool? {
        let parts = identity.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 4, let pid = Int32(parts[2]) else { return nil }
        guard parts[0] == hostname() else { return nil }
        // Same host, another boot: every process of that boot is gone.
        guard parts[1] == bootID() else { return false }
        guard let start = startTime(of: pid) else { return false }
        return start == parts[3]
    }

    private static func hostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            .replacingOccurrences(of: "/", with: "_")
    }

    private static func bootID() -> String {
        ((try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8)) ?? "?")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Field 22 of /proc/PID/stat: the start time in clock ticks since boot.
    private static func startTime(of pid: Int32) -> String? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after the command name (which may hold spaces) start at field 3.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // A zombie has exited; only its parent has not collected it yet.
        guard fields.count > 19, fields[0] != "Z", fields[0] != "X" else { return nil }
        return String(fields[19])
    }
}
