import Foundation
import TestSupport

/// A `corral` process a test can kill with SIGKILL at the moment it picks. Its calls block:
/// use them through `onOwnThread`, never on the cooperative pool.
final class HarnessProcess: @unchecked Sendable {
    // @unchecked: used by one thread at a time, the one the test runs it on.
    private let process = Process()
    private let output = Pipe()
    private let errors = Pipe()

    init(_ arguments: [String], environment: [String: String]) throws {
        process.executableURL = URL(fileURLWithPath: BuiltProducts.path("corral"))
        process.arguments = arguments
        process.environment = commandEnvironment(environment)
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    /// Reads stdout up to the first newline (blocking); nil when the output ends first.
    private var firstLineBytes: [UInt8] = []
    func firstLine() -> String? {
        let fd = output.fileHandleForReading.fileDescriptor
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1 {
            firstLineBytes.append(byte)
            if byte == UInt8(ascii: "\n") { return String(decoding: firstLineBytes.dropLast(), as: UTF8.self) }
        }
        return nil
    }

    func kill() {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
    }

    /// Waits for the process to end and returns its status and what it printed.
    func finish() -> Finished {
        let stderrData = Locked(Data())
        let reader = Thread { stderrData.set(self.errors.fileHandleForReading.readDataToEndOfFile()) }
        reader.start()
        let stdout = Data(firstLineBytes) + output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while !stderrData.done { usleep(1000) }
        return Finished(
            status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderrData.value, as: UTF8.self))
    }

    var wasKilled: Bool { process.terminationReason == .uncaughtSignal }

    struct Finished: Sendable {
        var status: Int32
        var stdout: String
        var stderr: String
    }
}

private final class Locked: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Data
    private var finished = false
    init(_ value: Data) { stored = value }
    func set(_ value: Data) {
        lock.withLock {
            stored = value; finished = true
        }
    }
    var value: Data { lock.withLock { stored } }
    var done: Bool { lock.withLock { finished } }
}

/// Runs blocking work on a thread of its own and resumes the caller when it is done.
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.stackSize = 1 << 20
        thread.start()
    }
}
