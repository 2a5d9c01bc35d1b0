import CorralAPI
import CorralCore
import CorralSandbox
import CorralServer
import CurlHTTP
import DockerEngine
import Foundation
import Synchronization
import TestSupport
import Testing

/// Issue 14 over HTTP: stdin, terminals, detach and re-attach, ps, kill and files anywhere the
/// sandbox user may write, through `CorralClient` against a live server on the engine.
@Suite("Commands and files over the API", .engine, .timeLimit(.minutes(10)))
struct CommandAPITests {
    static let runtimes: [SandboxRuntime] = [.runc, .runsc]

    /// A live server, a client for tenant A (and one for tenant B) and a sandbox of A's.
    static func withSandbox(
        runtime: SandboxRuntime = .runc,
        _ body: @Sendable (CorralClient, CorralClient, SandboxID) async throws -> Void
    ) async throws {
        try await ServerFixture.with { fixture in
            let (tokenA, tokenB) = (fixture.tokenA, fixture.tokenB)
            try await LiveServer.with(fixture) { live in
                let endpoint = try HTTPEndpoint(parsing: "http://127.0.0.1:\(live.port)")
                let client = try CorralClient(endpoint: endpoint, token: tokenA)
                let other = try CorralClient(endpoint: endpoint, token: tokenB)
                defer {
                    client.shutdown()
                    other.shutdown()
                }
                var request = CreateSandboxRequest()
                request.runtime = runtime.rawValue
                let sandbox = try await client.createSandbox(request)
                try await body(client, other, sandbox.id)
            }
        }
    }

    /// A host file's bytes as a stream, read on a thread of its own with backpressure.
    static func fileStream(_ file: URL) -> AsyncThrowingStream<[UInt8], any Error> {
        let channel = ByteChannel()
        Thread {
            do {
                let handle = try FileHandle(forReadingFrom: file)
                while let chunk = try handle.read(upToCount: 256 << 10), !chunk.isEmpty {
                    try channel.blockingSend(Array(chunk))
                }
                channel.finish()
            } catch {
                channel.finish(throwing: error)
            }
        }.start()
        return channel.asyncStream()
    }

    static func bytes(_ text: String) -> AsyncThrowingStream<[UInt8], any Error> {
        AsyncThrowingStream {
            $0.yield(Array(text.utf8)); $0.finish()
        }
    }

    // Without stdin on the API, sha256sum reads /dev/null and prints the empty input's sum.
    @Test("100 MB piped through the stdin call into sha256sum gives its checksum back", arguments: runtimes)
    func stdinChecksum(runtime: SandboxRuntime) async throws {
        try await withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("input")
            let expected = try await runOnThread { () -> String in
                _ = FileManager.default.createFile(atPath: file.path, contents: nil)
                let handle = try FileHandle(forWritingTo: file)
                var block = [UInt8](repeating: 0, count: 1 << 20)
                for index in 0..<100 {
                    for offset in stride(from: 0, to: block.count, by: 4096) { block[offset] = UInt8(index) }
                    try handle.write(contentsOf: block)
                }
                try handle.close()
                let output = try ChildProcess.run("/usr/bin/sha256sum", [file.path]).stdout
                return String(String(decoding: output, as: UTF8.self).prefix(64))
            }
            try await Self.withSandbox(runtime: runtime) { client, _, sandbox in
                let output = Shared("")
                let written = Shared<StdinWritten?>(nil)
                let status = try await withThrowingTaskGroup(of: Void.self) { group in
                    let status = try await client.runCommand(
                        sandbox, StartCommandRequest(SandboxCommand(["sha256sum"]), stdin: true),
                        started: { handle in
                            let input = Self.fileStream(file)
                            group.addTask {
                                let result = try await client.writeStdin(sandbox, handle.id, input)
                                written.withLock { $0 = result }
                            }
                        },
                        output: { chunk in output.withLock { $0 += String(decoding: chunk.bytes, as: UTF8.self) } })
                    try await group.waitForAll()
                    return status
                }
                #expect(status.exitCode == 0)
                #expect(written.withLock { $0 } == StdinWritten(bytes: 100 << 20, closed: true))
                #expect(output.withLock { $0 }.hasPrefix(expected), "\(output.withLock { $0 }) vs \(expected)")
            }
        }
    }

    static let script = """
        i=0; while [ $i -lt 2000 ]; do printf 'first %010d\\n' $i; i=$((i+1)); done
        echo 'first done'
        while [ ! -e /tmp/go ]; do sleep 0.05; done
        python3 -c 'import sys
        for i in range(49152): sys.stdout.write("second %055d\\n" % i)
        sys.stdout.flush()'
        echo 'second done'
        exec sleep 100000
        """

    static var firstPart: String { (0..<2000).map { String(format: "first %010d\n", $0) }.joined() + "first done\n" }

    // Without detach the first stream's end stops the command; without offsets the re-attach
    // replays nothing or cannot say what was dropped; without ps and kill the command can be
    // neither found nor stopped.
    @Test(
        "detach, disconnect and re-attach: nothing lost within the buffer, drops reported beyond it; ps lists it, kill stops it",
        arguments: runtimes)
    func detachAttach(runtime: SandboxRuntime) async throws {
        try await Self.withSandbox(runtime: runtime) { client, _, sandbox in
            let handle = try await client.startDetached(
                sandbox, StartCommandRequest(SandboxCommand(["sh", "-c", Self.script])))
            #expect(handle.detached)

            // Follow it until the first part, then go away.
            let first = Shared<[UInt8]>([])
            let follower = Task {
                try await client.attachCommand(sandbox, handle.id, from: 0) { chunk in
                    first.withLock { $0 += chunk.bytes }
                }
            }
            try await waitUntil("the first part") { first.withLock { $0.count } >= Self.firstPart.utf8.count }
            follower.cancel()
            _ = try? await follower.value
            #expect(String(decoding: first.withLock { $0 }, as: UTF8.self) == Self.firstPart)

            let listed = try await client.commands(sandbox)
            let mine = try #require(listed.first { $0.id == handle.id }, "\(listed)")
            #expect(mine.state == .running && mine.detached)

            // A replay from 0 is whole while the buffer holds it all.
            let replay = Shared<[UInt8]>([])
            let replayer = Task {
                try await client.attachCommand(sandbox, handle.id, from: 0) { chunk in
                    replay.withLock { $0 += chunk.bytes }
                }
            }
            try await waitUntil("the replay") { replay.withLock { $0.count } >= Self.firstPart.utf8.count }
            replayer.cancel()
            _ = try? await replayer.value
            #expect(String(decoding: replay.withLock { $0 }, as: UTF8.self) == Self.firstPart)

            // Let it write 3 MiB more than its 1 MiB buffer keeps, then come back where we left.
            try await client.writeFile(sandbox, path: "/tmp/go", contents: Self.bytes("go"))
            let end = Int64(Self.firstPart.utf8.count) + 49152 * 63 + Int64("second done\n".utf8.count)
            try await waitUntil("the second part") {
                try await client.commands(sandbox).first { $0.id == handle.id }?.outputEnd == end
            }
            let again = Shared<(handle: CommandHandle?, bytes: [UInt8])>((nil, []))
            let resumed = Task {
                try await client.attachCommand(
                    sandbox, handle.id, from: Int64(Self.firstPart.utf8.count),
                    attached: { handle in again.withLock { $0.handle = handle } },
                    output: { chunk in again.withLock { $0.bytes += chunk.bytes } })
            }
            try await waitUntil("the buffered tail") {
                again.withLock { String(decoding: $0.bytes.suffix(12), as: UTF8.self) } == "second done\n"
            }
            let (attached, tail) = again.withLock { ($0.handle, $0.bytes) }
            let reported = try #require(attached)
            #expect(reported.droppedBytes > 0)
            #expect(reported.startOffset == Int64(Self.firstPart.utf8.count) + reported.droppedBytes)
            #expect(Int64(tail.count) == end - reported.startOffset, "everything the buffer held came back")

            // kill ends it, and the follower sees how.
            try await client.signalCommand(sandbox, handle.id, "KILL")
            let status = try await resumed.value
            #expect(status.exitCode == 137)
            try await waitUntil("ps to list it as exited") {
                try await client.commands(sandbox).first { $0.id == handle.id }?.state == .exited
            }
        }
    }

    // Without the split between the cases, both would be one 404 (or one 409).
    @Test("attach to an unknown command is 404 and to a finished one 409; stdin on an exited one is 409")
    func attachErrors() async throws {
        try await Self.withSandbox { client, _, sandbox in
            let unknown = CommandID(unchecked: "cm-000000000000")
            let missing = await #expect(throws: CorralError.self) {
                _ = try await client.attachCommand(sandbox, unknown) { _ in }
            }
            #expect(missing?.code == .notFound, "\(String(describing: missing))")

            let handle = try await client.startDetached(
                sandbox, StartCommandRequest(SandboxCommand(["true"]), stdin: true))
            try await waitUntil("true to exit") {
                try await client.commands(sandbox).first { $0.id == handle.id }?.state == .exited
            }
            let finished = await #expect(throws: CorralError.self) {
                _ = try await client.attachCommand(sandbox, handle.id) { _ in }
            }
            #expect(finished?.code == .conflict, "\(String(describing: finished))")
            #expect(finished?.message != missing?.message)
            let stdin = await #expect(throws: CorralError.self) {
                try await client.writeStdin(sandbox, handle.id, Self.bytes("late\n"))
            }
            #expect(stdin?.code == .conflict, "\(String(describing: stdin))")
        }
    }

    // Without the tenant check on the sandbox, tenant B could list, follow or signal A's.
    @Test("another tenant's sandbox and command are 404 for ps, attach, stdin and kill")
    func otherTenant() async throws {
        try await Self.withSandbox { client, other, sandbox in
            let handle = try await client.startDetached(
                sandbox, StartCommandRequest(SandboxCommand(["sleep", "1000"])))
            for attempt in 0..<4 {
                let error = await #expect(throws: CorralError.self) {
                    switch attempt {
                    case 0: _ = try await other.commands(sandbox)
                    case 1: _ = try await other.attachCommand(sandbox, handle.id) { _ in }
                    case 2: try await other.writeStdin(sandbox, handle.id, Self.bytes("x"))
                    default: try await other.signalCommand(sandbox, handle.id, "KILL")
                    }
                }
                #expect(error?.code == .notFound, "attempt \(attempt): \(String(describing: error))")
            }
            #expect(try await client.commands(sandbox).first { $0.id == handle.id }?.state == .running)
            try await client.signalCommand(sandbox, handle.id, "KILL")
        }
    }

    // Without cancelling on disconnect, `sleep 1000` runs on after its caller left.
    @Test("a command that is not detached stops when its HTTP client goes away")
    func cancelledOnDisconnect() async throws {
        try await Self.withSandbox { client, _, sandbox in
            let id = Shared<CommandID?>(nil)
            let runner = Task {
                try await client.runCommand(
                    sandbox, StartCommandRequest(SandboxCommand(["sleep", "1000"]), stdin: true),
                    started: { handle in id.withLock { $0 = handle.id } }, output: { _ in })
            }
            try await waitUntil("the start") { id.withLock { $0 } != nil }
            runner.cancel()
            _ = try? await runner.value
            let command = try #require(id.withLock { $0 })
            try await waitUntil("sleep to be stopped") {
                try await client.commands(sandbox).first { $0.id == command }?.state == .exited
            }
        }
    }

    // Without a terminal the program sees no size; without resize, the second size is the
    // first; an unchecked size would reach the sandbox.
    @Test("a terminal over the API: its size at start, a resize reaches the program, absurd sizes are 400")
    func terminalResize() async throws {
        try await Self.withSandbox { client, _, sandbox in
            let output = Shared("")
            let input = ByteChannel()
            let started = Shared<CommandID?>(nil)
            let request = StartCommandRequest(
                SandboxCommand(["sh", "-c", "stty size; read line; stty size"]), stdin: true,
                terminal: TerminalSize(rows: 24, columns: 80))
            let runner = Task {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    let status = try await client.runCommand(
                        sandbox, request,
                        started: { handle in
                            started.withLock { $0 = handle.id }
                            group.addTask { try await client.writeStdin(sandbox, handle.id, input.asyncStream()) }
                        },
                        output: { chunk in output.withLock { $0 += String(decoding: chunk.bytes, as: UTF8.self) } })
                    group.cancelAll()
                    return status
                }
            }
            try await waitUntil("the first size") {
                return output.withLock { $0 }.contains("24 80")
            }
            let id = try #require(started.withLock { $0 })
            for (rows, columns) in [(100_000, 80), (24, 0), (-1, 80), (24, 50_000)] {
                let error = await #expect(throws: CorralError.self) {
                    try await client.resizeCommand(sandbox, id, to: TerminalSize(rows: rows, columns: columns))
                }
                #expect(error?.code == .invalidArgument, "\(rows)x\(columns): \(String(describing: error))")
            }
            try await client.resizeCommand(sandbox, id, to: TerminalSize(rows: 50, columns: 132))
            try await input.send(Array("go\r".utf8))
            input.finish()
            let status = try await runner.value
            #expect(status.exitCode == 0)
            #expect(output.withLock { $0 }.contains("50 132"), "\(output.withLock { $0 })")
        }
    }

    // Without the control connection the files routes reach only /workspace (the engine's
    // archive API sees neither tmpfs); without passing errors through, all are 500s.
    @Test(
        "files on /tmp and HOME both ways, list/mkdir/rename/remove, and the sandbox's own errors", arguments: runtimes)
    func filesAnywhere(runtime: SandboxRuntime) async throws {
        try await Self.withSandbox(runtime: runtime) { client, _, sandbox in
            let big = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            for path in ["/tmp/corral-big", "/home/agent/notes.bin"] {
                try await client.writeFile(
                    sandbox, path: path,
                    contents: AsyncThrowingStream { continuation in
                        for start in stride(from: 0, to: big.count, by: 100_000) {
                            continuation.yield(Array(big[start..<min(start + 100_000, big.count)]))
                        }
                        continuation.finish()
                    })
                var back: [UInt8] = []
                let size = try await client.readFile(sandbox, path: path) { back += $0 }
                #expect(size == Int64(big.count) && back == big, "\(path)")
            }
            try await client.makeDirectory(sandbox, path: "/tmp/a/b", parents: true)
            try await client.rename(sandbox, from: "/tmp/corral-big", to: "/tmp/a/b/moved")
            #expect(try await client.listDirectory(sandbox, path: "/tmp/a/b").map(\.name) == ["moved"])
            try await client.removePath(sandbox, path: "/tmp/a", recursive: true)
            #expect(try await client.stat(sandbox, path: "/tmp/a") == nil)

            let denied = await #expect(throws: CorralError.self) {
                try await client.writeFile(sandbox, path: "/etc/corral-denied", contents: Self.bytes("no"))
            }
            #expect(denied?.code == .permissionDenied, "\(String(describing: denied))")
            let missing = await #expect(throws: CorralError.self) {
                try await client.readFile(sandbox, path: "/tmp/nothing-here") { _ in }
            }
            #expect(
                missing?.code == .notFound && missing?.message.contains("ENOENT") == true,
                "\(String(describing: missing))")
            let directory = await #expect(throws: CorralError.self) {
                try await client.readFile(sandbox, path: "/tmp") { _ in }
            }
            #expect(directory?.code == .invalidArgument, "\(String(describing: directory))")
        }
    }
}

/// Polls `condition` every 50 ms for up to `seconds`.
func waitUntil(
    _ what: String, seconds: Double = 120, _ condition: @Sendable () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    Issue.record("timed out waiting for \(what)")
    throw CorralError(.timeout, "timed out waiting for \(what)")
}

/// A value shared by a test and the tasks it starts.
final class Shared<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) { mutex = Mutex(value) }

    func withLock<T: Sendable>(_ body: (inout sending Value) throws -> sending T) rethrows -> T {
        try mutex.withLock(body)
    }
}
