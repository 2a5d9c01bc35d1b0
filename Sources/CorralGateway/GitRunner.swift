import CorralCore
import Foundation
import Synchronization

/// Runs the host's git with a clean environment: no system or global config, no prompts, no
/// proxy variables inherited from the service. Credentials go in through
/// `GIT_CONFIG_COUNT`/`GIT_CONFIG_*` environment variables, never through arguments (which
/// any user on the host can read in the process list), and are redacted from the output.
struct GitRunner: Sendable {
    let executable: String
    let home: URL

    struct Outcome: Sendable {
        var status: Int32
        /// stdout and stderr together, at most 64 KiB, redacted.
        var output: String
    }

    /// Runs git; `stdinFile` feeds standard input from a file, starting at an offset.
    func run(
        _ arguments: [String], environment extra: [String: String] = [:], stdinFile: (url: URL, offset: UInt64)? = nil,
        redacting secrets: [String] = []
    ) async throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var environment = [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin",
            "HOME": home.path, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false", "LC_ALL": "C",
        ]
        environment.merge(extra) { _, new in new }
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        var input: FileHandle?
        if let stdinFile {
            do {
                let handle = try FileHandle(forReadingFrom: stdinFile.url)
                try handle.seek(toOffset: stdinFile.offset)
                input = handle
            } catch {
                throw CorralError(.io, "cannot open \(stdinFile.url.path) for git", underlying: error)
            }
        }
        process.standardInput = input ?? FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            try? input?.close()
            throw CorralError(
                .unavailable, "cannot run \(executable)",
                hint: "install git on the gateway's host (apt-get install git)",
                underlying: error)
        }
        try? input?.close()
        let running = RunningProcess(process)
        let reading = pipe.fileHandleForReading
        return try await withTaskCancellationHandler {
            try await runOnThread(name: "corral-git") {
                var output = Data()
                while true {
                    let data = reading.availableData
                    if data.isEmpty { break }
                    if output.count < 64 * 1024 { output.append(data.prefix(64 * 1024 - output.count)) }
                }
                running.wait()
                var text = String(decoding: output, as: UTF8.self)
                for secret in secrets where !secret.isEmpty {
                    text = text.replacingOccurrences(of: secret, with: "<redacted>")
                }
                return Outcome(status: running.status, output: text)
            }
        } onCancel: {
            running.terminate()
        }
    }
}

/// A started process, shared between the thread that waits for it and a cancellation
/// handler that may stop it.
private final class RunningProcess: @unchecked Sendable {
    // Process is thread-safe for these calls; the lock orders terminate against exit.
    private let process: Process
    private let lock = Mutex(false)

    init(_ process: Process) { self.process = process }

    func wait() {
        process.waitUntilExit()
        lock.withLock { $0 = true }
    }

    var status: Int32 { process.terminationStatus }

    func terminate() {
        lock.withLock { exited in
            if !exited && process.isRunning { process.terminate() }
        }
    }
}
