import Glibc

/// The sandbox's count of processes the kernel's out-of-memory killer has ended.
///
/// The engine marks a container OOM-killed only when its PID 1 dies, so a command killed
/// for memory looks like any other SIGKILL from outside. The cgroup's own counter tells:
/// `oom_kill` in memory.events (cgroup v2) or memory.oom_control (cgroup v1). gVisor has
/// neither; there the counter is unknown and nothing is reported.
enum OOMCounter {
    static let files = ["/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"]

    /// The line the exec wrapper writes to stderr; the host recognises it.
    static let marker = "out of memory:"

    static func read() -> Int? {
        for path in files {
            guard let text = readSmallFile(path) else { continue }
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ")
                if fields.count == 2, fields[0] == "oom_kill", let count = Int(fields[1]) { return count }
            }
        }
        return nil
    }

    private static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }
}
