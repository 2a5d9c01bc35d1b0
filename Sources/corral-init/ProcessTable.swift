import CorralPOSIX
import Glibc

/// Just enough of /proc to tell live processes from zombies.
enum ProcessTable {
    /// Whether some process in `group` is neither a zombie nor dead; nil when /proc cannot
    /// be read (not mounted), so that the caller falls back to what kill(2) said.
    static func hasLiveMember(ofGroup group: pid_t) -> Bool? {
        guard let directory = opendir("/proc") else { return nil }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = DirectoryEntry.name(entry)
            guard let pid = Int32(name), let stat = readStat(pid: pid) else { continue }
            if stat.processGroup == group && stat.state != "Z" && stat.state != "X" { return true }
        }
        return false
    }

    struct Stat {
        var state: Character
        var processGroup: pid_t
    }

    /// Parses `/proc/PID/stat`: "pid (comm) state ppid pgrp ...". comm may hold spaces and
    /// parentheses, so fields are counted from the last ')'.
    static func readStat(pid: pid_t) -> Stat? {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }  // gone since readdir: not alive
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        let bytes = buffer[..<count]
        guard let commEnd = bytes.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = bytes[(commEnd + 1)...].split(separator: UInt8(ascii: " "))
        guard fields.count >= 3, let stateByte = fields[0].first,
            let group = Int32(String(decoding: fields[2], as: UTF8.self))
        else { return nil }
        return Stat(state: Character(Unicode.Scalar(stateByte)), processGroup: group)
    }
}
