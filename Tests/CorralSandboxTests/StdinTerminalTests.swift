import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import TestSupport
import Testing

/// stdin and terminals over the control connection, on runc and gVisor.
@Suite("stdin and terminals through the library", .engine)
struct StdinTerminalTests {
    static let runtimes: [SandboxRuntime] = [.runc, .runsc]

    /// 100 MB through `cat`, checked byte for byte as it comes back: every block carries its
    /// index, so a lost, repeated or reordered block shows. Without a stdin frame the command
    /// reads /dev/null and `write` throws; without flow control on stdin the host would hold
    /// the whole stream (or corral-init would), which the memory check catches; without EOF
    /// `cat` never exits and the wait times out.
    @Test(
        "100 MB piped through cat comes back byte for byte, EOF ends it, and memory stays bounded",
        .timeLimit(.minutes(5)), arguments: runtimes)
    func memoryBoundPipeThroughCat(runtime: SandboxRuntime) async throws {
        let fixture = try EngineFixture(path: .control)
        try await fixture.withSandbox(on: runtime) { sandbox in
            let total = 100_000_000
            let command = try await sandbox.start(SandboxCommand(["cat"]), stdin: true)
            #expect(command.acceptsInput && !command.hasTerminal && !command.isDetached)
            let ((status, received), growth) = try await peakResidentGrowth {
                try await withThrowingTaskGroup(of: Int?.self) { group in
                    group.addTask {
                        var sent = 0
                        while sent < total {
                            let chunk = StreamPattern.bytes(at: sent, count: min(256 << 10, total - sent))
                            try await command.write(stdin: chunk)
                            sent += chunk.count
                        }
                        try await command.closeStdin()
                        return nil
                    }
                    group.addTask {
                        var received = 0
                        for try await chunk in command.output {
                            #expect(chunk.stream == .stdout)
                            #expect(chunk.offset == Int64(received))
                            guard chunk.bytes == StreamPattern.bytes(at: received, count: chunk.bytes.count) else {
                                Issue.record(
                                    "the output differs from the input within \(received)...\(received + chunk.bytes.count)"
                                )
                                return received
                            }
                            received += chunk.bytes.count
                        }
                        return received
                    }
                    var received = 0
                    for try await value in group { if let value { received = value } }
                    return (try await command.wait(), received)
                }
            }
            #expect(received == total)
            #expect(status.exitCode == 0, "cat ends at EOF, with status 0")
            print("stdin through cat (\(runtime)): resident memory grew by \(growth >> 20) MiB")
            #expect(growth < 64 << 20, "the host grew by \(growth >> 20) MiB for a 100 MB stream")
        }
    }

    @Test(
        "sha256sum gets the whole stream and its EOF; stdin to a command that has exited, closed its stdin or never had one is a clear error",
        .timeLimit(.minutes(3)), arguments: runtimes)
    func stdinErrors(runtime: SandboxRuntime) async throws {
        let fixture = try EngineFixture(path: .control)
        try await fixture.withSandbox(on: runtime) { sandbox in
            let sum = try await sandbox.start(SandboxCommand(["sha256sum"]), stdin: true)
            let (output, reader) = OutputCollector.reading(sum)
            let data = StreamPattern.bytes(at: 0, count: 3_000_000)
            try await sum.write(stdin: data)
            try await sum.closeStdin()
            #expect(try await sum.wait().exitCode == 0)
            await reader.value
            // The host's sha256sum runs on a thread of its own: the test's cooperative threads
            // must not block on a process.
            let expected = try await runOnThread { try StreamPattern.hostSHA256(data) }
            #expect(output.text == "\(expected)  -\n")

            let finished = try await sandbox.start(SandboxCommand(["true"]), stdin: true)
            #expect(try await finished.wait().exitCode == 0)
            let afterExit = await #expect(throws: CorralError.self) { try await finished.write(stdin: "late\n") }
            #expect(afterExit?.description.contains("has exited") == true, "\(String(describing: afterExit))")

            // `head` reads one line and exits: corral-init finds stdin closed (EPIPE), and the
            // writer hears it, however much it still sends.
            let head = try await sandbox.start(SandboxCommand(["head", "-n", "1"]), stdin: true)
            let (headOutput, headReader) = OutputCollector.reading(head)
            let refused = await #expect(throws: CorralError.self) {
                for _ in 0..<4096 {
                    try await head.write(stdin: Array(repeating: UInt8(ascii: "x"), count: 32 << 10) + [10])
                }
            }
            #expect(
                refused?.description.contains("closed its stdin") == true
                    || refused?.description.contains("has exited") == true
                    || refused?.description.contains("has ended") == true, "\(String(describing: refused))")
            await headReader.value
            #expect(headOutput.count == (32 << 10) + 1)

            let noStdin = try await sandbox.start(SandboxCommand(["sleep", "30"]))
            let refusedInput = await #expect(throws: CorralError.self) { try await noStdin.write(stdin: "x") }
            #expect(refusedInput?.description.contains("without stdin") == true)
            noStdin.detach()
        }
    }

    /// python3's REPL on a terminal. Without a PTY python prints no prompt and reads its input
    /// as a script; without TIOCSWINSZ the size stays 24x80 and no SIGWINCH comes.
    @Test(
        "python3's REPL on a terminal: prompt, 6*7, a resize it sees (SIGWINCH and the new size), exit()",
        .timeLimit(.minutes(3)), arguments: runtimes)
    func pythonREPL(runtime: SandboxRuntime) async throws {
        let fixture = try EngineFixture(path: .control)
        try await fixture.withSandbox(on: runtime) { sandbox in
            let repl = try await sandbox.start(
                SandboxCommand(["python3", "-q"]), stdin: true, terminal: TerminalSize(rows: 24, columns: 80))
            #expect(repl.hasTerminal)
            let (output, reader) = OutputCollector.reading(repl)
            try await output.waitFor("the prompt") { $0.contains(">>> ") }
            try await repl.write(stdin: "print(6*7)\n")
            try await output.waitFor("42") { $0.contains("\r\n42\r\n") }
            try await repl.write(
                stdin:
                    "import signal, shutil; signal.signal(signal.SIGWINCH, lambda *a: print('winched')); print(shutil.get_terminal_size())\n"
            )
            try await output.waitFor("the first size") { $0.contains("os.terminal_size(columns=80, lines=24)") }
            try await repl.resize(rows: 50, columns: 132)
            try await output.waitFor("SIGWINCH") { $0.contains("winched") }
            try await repl.write(stdin: "print(shutil.get_terminal_size())\n")
            try await output.waitFor("the new size") { $0.contains("os.terminal_size(columns=132, lines=50)") }

            // Absurd sizes are refused before anything is sent.
            for (rows, columns) in [(0, 80), (24, 0), (100_000, 80), (24, 1_000_000), (-1, -1)] {
                let refused = await #expect(throws: CorralError.self) {
                    try await repl.resize(rows: rows, columns: columns)
                }
                #expect(refused?.code == .invalidArgument)
                #expect(refused?.description.contains("out of range") == true)
            }
            await #expect(throws: CorralError.self) {
                _ = try await sandbox.start(
                    SandboxCommand(["true"]), terminal: TerminalSize(rows: 5000, columns: 80))
            }

            try await repl.write(stdin: "exit()\n")
            #expect(try await repl.wait().exitCode == 0)
            await reader.value
            #expect(output.error == nil, "\(output.error ?? "")")
        }
    }

    @Test(
        "a terminal's EOF (closeStdin sends ^D) ends a program reading lines; a command without one cannot be resized")
    func terminalEOF() async throws {
        let fixture = try EngineFixture(path: .control)
        try await fixture.withSandbox { sandbox in
            let cat = try await sandbox.start(
                SandboxCommand(["cat"]), stdin: true, terminal: TerminalSize(rows: 10, columns: 40))
            let (output, reader) = OutputCollector.reading(cat)
            try await cat.write(stdin: "hello\n")
            try await output.waitFor("the echo") { $0.contains("hello\r\nhello\r\n") }
            try await cat.closeStdin()
            #expect(try await cat.wait().exitCode == 0)
            await reader.value

            let plain = try await sandbox.start(SandboxCommand(["sleep", "30"]))
            let refused = await #expect(throws: CorralError.self) { try await plain.resize(rows: 10, columns: 10) }
            #expect(refused?.description.contains("no terminal") == true)
            plain.detach()
        }
    }

    @Test(
        "through the engine's exec, stdin, terminals and detached commands are refused, saying the control connection is needed; a plain start works"
    )
    func enginePathRefuses() async throws {
        let fixture = try EngineFixture(path: .engine)
        try await fixture.withSandbox { sandbox in
            for (stdin, terminal, detached) in [
                (true, nil, false), (false, TerminalSize(rows: 24, columns: 80), false), (false, nil, true),
            ] as [(Bool, TerminalSize?, Bool)] {
                let refused = await #expect(throws: CorralError.self) {
                    _ = try await sandbox.start(
                        SandboxCommand(["cat"]), stdin: stdin, terminal: terminal, detached: detached)
                }
                #expect(refused?.code == .unsupported)
                #expect(refused?.description.contains("control connection") == true, "\(String(describing: refused))")
            }
            let plain = try await sandbox.start(SandboxCommand(["sh", "-c", "echo one; echo two >&2; exit 3"]))
            var text = ""
            for try await chunk in plain.output { text += String(decoding: chunk.bytes, as: UTF8.self) }
            #expect(text.contains("one\n") && text.contains("two\n"))
            #expect(try await plain.wait().exitCode == 3)
            for operation in ["commands", "attach", "signal"] {
                let refused = await #expect(throws: CorralError.self) {
                    switch operation {
                    case "commands": _ = try await sandbox.commands()
                    case "attach": _ = try await sandbox.attach(CommandID.random())
                    default: try await sandbox.signal(id: CommandID.random(), .terminate)
                    }
                }
                #expect(refused?.description.contains("control connection") == true, "\(operation)")
            }
        }
    }
}

/// A stream whose every byte is known from its offset: 1 MiB blocks of pseudo-random bytes,
/// each starting with its own index.
enum StreamPattern {
    static let blockSize = 1 << 20
    static let block: [UInt8] = {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        return (0..<blockSize).map { _ in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
    }()

    static func byte(at offset: Int) -> UInt8 {
        let index = offset / blockSize
        let within = offset % blockSize
        if within < 8 { return UInt8(truncatingIfNeeded: index >> (8 * within)) }
        return block[within]
    }

    static func bytes(at offset: Int, count: Int) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(count)
        var position = offset
        while result.count < count {
            let within = position % blockSize
            if within < 8 {
                result.append(byte(at: position))
                position += 1
            } else {
                let take = min(count - result.count, blockSize - within)
                result += block[within..<(within + take)]
                position += take
            }
        }
        return result
    }

    /// The host's sha256sum of `data`.
    static func hostSHA256(_ data: [UInt8]) throws -> String {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("corral-sha-\(UUID().uuidString)")
        try Data(data).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let output = try ChildProcess.run("/usr/bin/sha256sum", [file.path]).stdout
        return String(decoding: output, as: UTF8.self).split(separator: " ").first.map(String.init) ?? ""
    }
}
