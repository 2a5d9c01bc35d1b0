import CorralCore
import Foundation
import Testing

/// A child process with pipes on its stdin, stdout and stderr (CorralCore's ChildProcess), so
/// that a test can kill it with SIGKILL at the moment it chooses and read exactly what it
/// printed. Its reads block: call them from `onOwnThread`, never from the cooperative pool.
final class PipedChild: @unchecked Sendable {
    // @unchecked: used from one thread at a time by the test that made it.
    private let child: ChildProcess
    private var input: Int32
    private let output: Int32
    private let errors: Int32
    private var outputBuffer: [UInt8] = []
    private var outputClosed = false
    private(set) var exitStatus: Int32?

    var pid: pid_t { child.pid }

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        // A write to a child that was just killed must fail with EPIPE, not kill the tests.
        signal(SIGPIPE, SIG_IGN)
        // Every pipe end is close-on-exec and the child gets only its own three, so that no
        // child keeps another's pipe open after that one is gone.
        let stdinPipe = try ChildProcess.makePipe()
        let stdoutPipe = try ChildProcess.makePipe()
        let stderrPipe = try ChildProcess.makePipe()
        defer {
            close(stdinPipe.read)
            close(stdoutPipe.write)
            close(stderrPipe.write)
        }
        do {
            child = try ChildProcess.spawn(
                executable, arguments,
                environment: ProcessInfo.processInfo.environment.merging(environment) { _, new in new },
                stdin: stdinPipe.read, stdout: stdoutPipe.write, stderr: stderrPipe.write)
        } catch {
            for fd in [stdinPipe.write, stdoutPipe.read, stderrPipe.read] { close(fd) }
            throw error
        }
        input = stdinPipe.write
        output = stdoutPipe.read
        errors = stderrPipe.read
    }

    deinit {
        if input >= 0 { close(input) }
        close(output)
        close(errors)
        if exitStatus == nil {
            child.signal(SIGKILL)
            child.wait()
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

    func killHard() { child.signal(SIGKILL) }

    /// Waits for the child; its exit status, or 128 + the signal that ended it.
    @discardableResult
    func wait() -> Int32 {
        let termination = child.wait()
        let code = termination.code ?? 128 + termination.status
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
