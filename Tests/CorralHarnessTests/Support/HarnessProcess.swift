import CorralCore
import Foundation
import Synchronization
import TestSupport

/// A `corral` process a test can kill with SIGKILL at the moment it picks. Its calls block:
/// use them through `onOwnThread`, never on the cooperative pool.
final class HarnessProcess: @unchecked Sendable {
    // @unchecked: used by one thread at a time, the one the test runs it on.
    private let child: ChildProcess
    private let output: Int32
    private let errors: Int32

    init(_ arguments: [String], environment: [String: String]) throws {
        let output = try ChildProcess.makePipe()
        let errors = try ChildProcess.makePipe()
        defer {
            close(output.write)
            close(errors.write)
        }
        child = try ChildProcess.spawn(
            BuiltProducts.path("corral"), arguments, environment: commandEnvironment(environment),
            stdout: output.write, stderr: errors.write)
        self.output = output.read
        self.errors = errors.read
    }

    deinit {
        close(output)
        close(errors)
    }

    /// Reads stdout up to the first newline (blocking); nil when the output ends first.
    private var firstLineBytes: [UInt8] = []
    func firstLine() -> String? {
        var byte: UInt8 = 0
        while read(output, &byte, 1) == 1 {
            firstLineBytes.append(byte)
            if byte == UInt8(ascii: "\n") { return String(decoding: firstLineBytes.dropLast(), as: UTF8.self) }
        }
        return nil
    }

    func kill() { child.signal(SIGKILL) }

    /// Waits for the process to end and returns its status and what it printed.
    func finish() -> Finished {
        let errors = self.errors
        let stderrData = Mutex(Data())
        let stderrRead = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            stderrData.withLock { $0 = readToEnd(errors) }
            stderrRead.signal()
        }
        let stdout = Data(firstLineBytes) + readToEnd(output)
        let termination = child.wait()
        stderrRead.wait()
        return Finished(
            status: termination.status, stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderrData.withLock { $0 }, as: UTF8.self))
    }

    var wasKilled: Bool { child.wait().signal != nil }

    struct Finished: Sendable {
        var status: Int32
        var stdout: String
        var stderr: String
    }
}
/// Runs blocking work on a thread of its own and resumes the caller when it is done.
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.stackSize = 1 << 20
        thread.start()
    }
}
