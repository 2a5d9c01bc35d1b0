import Foundation
import Testing

/// A child process with pipes on its stdin, stdout and stderr, made with posix_spawn so that
/// a test can kill it with SIGKILL at the moment it chooses and read exactly what it printed.
/// Its reads block: call them from `onOwnThread`, never from the cooperative pool.
final class ChildProcess: @unchecked Sendable {
    // @unchecked: used from one thread at a time by the test that made it.
    private static let spawning = NSLock()
    let pid: pid_t
    private var input: Int32
    private let output: Int32
    private let errors: Int32
    private var outputBuffer: [UInt8] = []
    private var outputClosed = false
    private(set) var exitStatus: Int32?

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        // A write to a child that was just killed must fail with EPIPE, not kill the tests.
        signal(SIGPIPE, SIG_IGN)
        // Tests spawn children from several threads at once: every pipe end is close-on-exec
        // (posix_spawn's dup2 onto 0, 1 and 2 clears that for the child's own), and pipes are
        // made and children spawned one at a time, so that no child inherits another's pipe
        // and keeps it open after that one is gone.
        Self.spawning.lock()
        defer { Self.spawning.unlock() }
        var stdinPipe: [Int32] = [-1, -1]
        var stdoutPipe: [Int32] = [-1, -1]
        var stderrPipe: [Int32] = [-1, -1]
        guard pipe(&stdinPipe) == 0, pipe(&stdoutPipe) == 0, pipe(&stderrPipe) == 0 else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        for fd in stdinPipe + stdoutPipe + stderrPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)
        var merged = ProcessInfo.processInfo.environment
        for (key, value) in environment { merged[key] = value }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var child: pid_t = 0
        let status = posix_spawn(&child, executable, &actions, nil, argv, envp)
        close(stdinPipe[0])
        close(stdoutPipe[1])
        close(stderrPipe[1])
        guard status == 0 else {
            close(stdinPipe[1])
            close(stdoutPipe[0])
            close(stderrPipe[0])
            throw POSIXError(POSIXErrorCode(rawValue: status) ?? .EIO)
        }
        pid = child
        input = stdinPipe[1]
        output = stdoutPipe[0]
        errors = stderrPipe[0]
    }

    deinit {
        if input >= 0 { close(input) }
        close(output)
        close(errors)
        if exitStatus == nil {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }

    /// False once the child has stopped reading.
    @discardableResult
    func write(_ text: String) -> Bool {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { raw in
                raw.baseAddress.map { Glibc.write(input, $0 + offset, raw.count - offset) } ?? 0
            }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }

    func closeInput() {
        if input >= 0 { close(input) }
        input = -1
    }

    /// The next line of stdout, without its newline; nil at end of output.
    func readLine() -> String? {
        while true {
            if let newline = outputBuffer.firstIndex(of: 0x0A) {
                let line = String(decoding: outputBuffer[..<newline], as: UTF8.self)
                outputBuffer.removeSubrange(...newline)
                return line
            }
            if outputClosed {
                guard !outputBuffer.isEmpty else { return nil }
                defer { outputBuffer = [] }
                return String(decoding: outputBuffer, as: UTF8.self)
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { read(output, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { outputClosed = true } else { outputBuffer += chunk[..<n] }
        }
    }

    func remainingOutput() -> [String] {
        var lines: [String] = []
        while let line = readLine() { lines.append(line) }
        return lines
    }

    func errorOutput() -> String {
        var all: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(errors, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            all += chunk[..<n]
        }
        return String(decoding: all, as: UTF8.self)
    }

    func killHard() { kill(pid, SIGKILL) }

    /// Waits for the child; its exit status, or 128 + the signal that ended it.
    @discardableResult
    func wait() -> Int32 {
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        exitStatus = code
        return code
    }
}

/// Runs blocking work (reading a child's pipes) on a thread of its own, so that the test
/// does not hold one of Swift's cooperative threads while it waits.
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.stackSize = 8 << 20
        thread.start()
    }
}

enum CorralBinary {
    /// The `corral` executable built beside the test bundle (`swift build` makes it; `make
    /// test` runs that first).
    static func path() throws -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        var directory =
            count > 0
            ? String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
        var candidates: [String] = []
        for _ in 0..<4 {
            directory = (directory as NSString).deletingLastPathComponent
            candidates.append(directory + "/corral")
        }
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw CommandLineMissing(looked: candidates)
        }
        return found
    }

    struct CommandLineMissing: Error, CustomStringConvertible {
        var looked: [String]
        var description: String {
            "the corral executable is not built (looked in \(looked.joined(separator: ", "))); run `swift build` first, as `make test` does"
        }
    }
}
