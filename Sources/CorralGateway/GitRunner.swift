import CorralCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

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
        var environment = [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin",
            "HOME": home.path, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false", "LC_ALL": "C",
        ]
        environment.merge(extra) { _, new in new }
        var input: Int32?
        if let stdinFile {
            let fd = open(stdinFile.url.path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0, lseek(fd, off_t(stdinFile.offset), SEEK_SET) >= 0 else {
                let reason = String(cString: strerror(errno))
                if fd >= 0 { close(fd) }
                throw CorralError(.io, "cannot open \(stdinFile.url.path) for git: \(reason)")
            }
            input = fd
        }
        defer { if let input { close(input) } }
        let pipe = try ChildProcess.makePipe()
        let child: ChildProcess
        do {
            child = try ChildProcess.spawn(
                executable, arguments, environment: environment, stdin: input, stdout: pipe.write, stderr: pipe.write)
        } catch {
            close(pipe.read)
            close(pipe.write)
            throw CorralError(
                .unavailable, "cannot run \(executable)",
                hint: "install git on the gateway's host (apt-get install git)",
                underlying: error)
        }
        close(pipe.write)
        return try await withTaskCancellationHandler {
            try await runOnThread(name: "corral-git") {
                defer { close(pipe.read) }
                var output = Data()
                var buffer = [UInt8](repeating: 0, count: 16 * 1024)
                while true {
                    let count = read(pipe.read, &buffer, buffer.count)
                    if count < 0 && errno == EINTR { continue }
                    if count <= 0 { break }
                    if output.count < 64 * 1024 {
                        output.append(contentsOf: buffer[0..<min(count, 64 * 1024 - output.count)])
                    }
                }
                let termination = child.wait()
                var text = String(decoding: output, as: UTF8.self)
                for secret in secrets where !secret.isEmpty {
                    text = text.replacingOccurrences(of: secret, with: "<redacted>")
                }
                return Outcome(status: termination.status, output: text)
            }
        } onCancel: {
            child.signal(SIGTERM)
        }
    }
}
