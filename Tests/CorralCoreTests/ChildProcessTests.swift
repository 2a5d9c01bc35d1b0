import CorralCore
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Host programs started with posix_spawn")
struct ChildProcessTests {
    @Test("run collects stdout and stderr apart, feeds stdin, and reports the exit code")
    func runCollects() throws {
        let output = try ChildProcess.run(
            "/bin/sh", ["-c", "cat; echo to-stderr >&2; exit 7"], environment: ["PATH": "/usr/bin:/bin"],
            stdin: Data("from stdin\n".utf8))
        #expect(String(decoding: output.stdout, as: UTF8.self) == "from stdin\n")
        #expect(String(decoding: output.stderr, as: UTF8.self) == "to-stderr\n")
        #expect(output.termination == ChildProcess.Termination(code: 7, signal: nil))
        #expect(output.reason == "to-stderr")
    }

    @Test("stdin and both outputs far beyond a pipe's buffer neither stall nor get lost; limit keeps a prefix")
    func largeStreams() throws {
        let input = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        let output = try ChildProcess.run(
            "/bin/sh", ["-c", "tee /dev/stderr"], environment: ["PATH": "/usr/bin:/bin"], stdin: input,
            limit: 1 << 20)
        #expect(output.termination.succeeded)
        #expect(output.stdout == input.prefix(1 << 20))
        #expect(output.stderr == input.prefix(1 << 20))
    }

    @Test("the child gets only descriptors 0, 1 and 2, and the environment it was given")
    func cleanStart() throws {
        let leaked = open("/dev/null", O_RDONLY)  // not close-on-exec: spawn must still close it
        defer { close(leaked) }
        let output = try ChildProcess.run("/bin/sh", ["-c", "ls /proc/self/fd; env"], environment: ["ONLY": "this"])
        let lines = String(decoding: output.stdout, as: UTF8.self).split(separator: "\n")
        // ls's own directory descriptor is the 3 it lists.
        #expect(lines.filter { Int($0) != nil } == ["0", "1", "2", "3"])
        #expect(lines.contains("ONLY=this"))
        #expect(!lines.contains { $0.hasPrefix("HOME=") })
    }

    @Test("SIGTERM ends a child even when the parent blocks it, and a signal after reaping goes nowhere")
    func signals() throws {
        var blocked = sigset_t()
        var previous = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &blocked, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        let child = try ChildProcess.spawn("/bin/sleep", ["60"])
        #expect(child.isRunning)
        child.signal(SIGTERM)
        #expect(child.wait() == ChildProcess.Termination(code: nil, signal: SIGTERM))
        #expect(!child.isRunning)
        child.signal(SIGKILL)  // reaped: must not reach whatever reuses the pid
        #expect(child.wait().signal == SIGTERM)
    }

    @Test("a program that does not exist is an error naming it, not a child that exits 127")
    func missingProgram() throws {
        #expect {
            try ChildProcess.run("/nonexistent/corral-program", [])
        } throws: { error in
            "\(error)".contains("cannot run /nonexistent/corral-program")
        }
    }

    @Test("many threads starting programs at once")
    func concurrentStarts() async throws {
        try await withThrowingTaskGroup(of: Int32.self) { group in
            for index in 0..<64 {
                group.addTask {
                    try await runOnThread {
                        try ChildProcess.run("/bin/sh", ["-c", "exit \(index % 5)"]).status
                    }
                }
            }
            var statuses: [Int32] = []
            for try await status in group { statuses.append(status) }
            #expect(statuses.sorted() == (0..<64).map { Int32($0 % 5) }.sorted())
        }
    }
}
