import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import TestSupport
import Testing

/// Files through the control connection: corral-init reads and writes them as the sandbox's
/// user, so tmpfs paths work and the sandbox's own errors come back.
@Suite("Files anywhere the sandbox's user may write, over the control connection", .engine)
struct ControlFileTests {
    static let runtimes: [SandboxRuntime] = [.runc, .runsc]

    // The engine's archive API cannot reach tmpfs mounts: on the old path every write here
    // lands in the container's read-only root (refused) or nowhere.
    @Test(
        "write, read, stat, list, mkdir, rename and remove on /tmp and HOME; copies both ways; the editor tool there",
        .timeLimit(.minutes(3)), arguments: runtimes)
    func tmpfsBothWays(runtime: SandboxRuntime) async throws {
        let fixture = try EngineFixture(path: .control)
        try await withTemporaryDirectory { host in
            try await fixture.withSandbox(on: runtime) { sandbox in
                let user = SandboxUser(for: sandbox.id)
                for directory in ["/tmp", "/home/agent"] {
                    let file = "\(directory)/notes.txt"
                    try await sandbox.writeFile(file, contents: Array("hello \(directory)\n".utf8), mode: 0o640)
                    let inside = try await sandbox.run(Self.statCommand("%(mode)o %(uid)d:%(gid)d", file))
                    #expect(inside.stdout == "640 \(user)\n", "written as the sandbox's user, with the mode asked")
                    #expect(try await sandbox.readFile(file, limit: 1 << 20) == Array("hello \(directory)\n".utf8))
                    let stat = try #require(try await sandbox.stat(file))
                    #expect(!stat.isDirectory && stat.size == Int64("hello \(directory)\n".utf8.count))
                    #expect(stat.mode & 0o777 == 0o640)

                    try await sandbox.makeDirectory("\(directory)/a/b/c", parents: true)
                    try await sandbox.rename(file, to: "\(directory)/a/b/c/moved.txt")
                    let listing = try await sandbox.listDirectory("\(directory)/a/b/c")
                    #expect(listing.map(\.name) == ["moved.txt"])
                    #expect(listing.first?.kind == .file)
                    #expect(try await sandbox.stat(file) == nil)
                    try await sandbox.removePath("\(directory)/a", recursive: true)
                    #expect(try await sandbox.stat("\(directory)/a") == nil)
                }

                // A host directory in and out of HOME.
                let source = host.appendingPathComponent("project")
                try FileManager.default.createDirectory(
                    at: source.appendingPathComponent("src"), withIntermediateDirectories: true)
                try Data("print('hi')\n".utf8).write(to: source.appendingPathComponent("src/main.py"))
                try Data(repeating: 7, count: 300_000).write(to: source.appendingPathComponent("blob.bin"))
                try await sandbox.copyIn(from: source, to: "/home/agent")
                let ran = try await sandbox.run(
                    SandboxCommand(["sh", "-c", "cd /home/agent/project && python3 src/main.py && wc -c < blob.bin"]))
                #expect(ran.stdout == "hi\n300000\n")
                let back = host.appendingPathComponent("back")
                try await sandbox.copyOut("/home/agent/project", to: back)
                #expect(try Data(contentsOf: back.appendingPathComponent("src/main.py")) == Data("print('hi')\n".utf8))
                #expect(try Data(contentsOf: back.appendingPathComponent("blob.bin")).count == 300_000)

                // The editor tool, on /tmp.
                let created = try await sandbox.execute(
                    tool: "str_replace_based_edit_tool",
                    input: ["command": "create", "path": "/tmp/edit.txt", "file_text": "alpha\nbeta\n"])
                #expect(!created.isError, "\(created.text)")
                let replaced = try await sandbox.execute(
                    tool: "str_replace_based_edit_tool",
                    input: ["command": "str_replace", "path": "/tmp/edit.txt", "old_str": "beta", "new_str": "BETA"])
                #expect(!replaced.isError, "\(replaced.text)")
                #expect(try await sandbox.run(SandboxCommand(["cat", "/tmp/edit.txt"])).stdout == "alpha\nBETA\n")
            }
        }
    }

    @Test(
        "paths the sandbox's user may not write give the sandbox's own errors: EROFS, EACCES, ENOENT, EISDIR, ENOSPC",
        .timeLimit(.minutes(3)), arguments: runtimes)
    func sandboxErrors(runtime: SandboxRuntime) async throws {
        let fixture = try EngineFixture(path: .control)
        try await fixture.withSandbox(on: runtime, { $0.resources.tmpSize = .mebibytes(4) }) { sandbox in
            func failure(_ body: () async throws -> Void) async -> CorralError? {
                await #expect(throws: CorralError.self) { try await body() }
            }
            // Linux says the root is read-only; gVisor checks the directory's permissions first.
            let readOnly = await failure { try await sandbox.writeFile("/etc/evil", contents: [1]) }
            #expect(readOnly?.code == .permissionDenied)
            let rootError = runtime == .runc ? "read-only file system (EROFS)" : "(EACCES)"
            #expect(readOnly?.description.contains(rootError) == true, "\(String(describing: readOnly))")

            _ = try await sandbox.run(SandboxCommand(["sh", "-c", "mkdir /tmp/locked && chmod 500 /tmp/locked"]))
            let denied = await failure { try await sandbox.writeFile("/tmp/locked/x", contents: [1]) }
            #expect(denied?.code == .permissionDenied)
            #expect(denied?.description.contains("(EACCES)") == true, "\(String(describing: denied))")

            let missing = await failure { _ = try await sandbox.readFile("/tmp/nothing-here", limit: 10) }
            #expect(missing?.code == .notFound)
            #expect(missing?.description.contains("(ENOENT)") == true, "\(String(describing: missing))")

            let directory = await failure { _ = try await sandbox.readFile("/tmp", limit: 10) }
            #expect(directory?.description.contains("(EISDIR)") == true, "\(String(describing: directory))")

            // /tmp is a 4 MiB tmpfs here.
            let full = await failure {
                try await sandbox.writeFile("/tmp/big", mode: 0o644, from: GeneratedChunks(total: 16 << 20))
            }
            #expect(full?.code == .resourceExhausted)
            #expect(full?.description.contains("(ENOSPC)") == true, "\(String(describing: full))")
            let leftovers = try await sandbox.run(SandboxCommand(["sh", "-c", "ls -A /tmp | grep -v locked || true"]))
            #expect(leftovers.stdout.isEmpty, "a failed write leaves nothing behind: \(leftovers.stdout)")

            let outside = await failure { try await sandbox.makeDirectory("/usr/evil") }
            #expect(outside?.code == .permissionDenied)
            let outsideText = outside?.description ?? ""
            #expect(outsideText.contains("(EROFS)") || outsideText.contains("(EACCES)"), "\(outsideText)")
        }
    }

    // Without flow control on file streams, the host (or corral-init) would hold the file whole:
    // 200 MB of growth against the bound here.
    @Test(
        "a 200 MB file goes in and comes back out intact, and the host's memory stays bounded",
        .timeLimit(.minutes(5)), arguments: runtimes)
    func memoryBoundLargeRoundTrip(runtime: SandboxRuntime) async throws {
        let fixture = try EngineFixture(path: .control)
        try await fixture.withSandbox(on: runtime) { sandbox in
            let total = 200_000_000
            let (read, growth) = try await peakResidentGrowth { () -> Int in
                try await sandbox.writeFile("/workspace/big.bin", mode: 0o600, from: GeneratedChunks(total: total))
                var offset = 0
                var intact = true
                try await sandbox.readFile("/workspace/big.bin") { chunk in
                    if intact && chunk != StreamPattern.bytes(at: offset, count: chunk.count) {
                        intact = false
                        Issue.record("the file differs within \(offset)...\(offset + chunk.count)")
                    }
                    offset += chunk.count
                }
                return offset
            }
            #expect(read == total)
            let size = try await sandbox.run(Self.statCommand("%(size)d %(mode)o", "/workspace/big.bin"))
            #expect(size.stdout == "\(total) 600\n")
            print("200 MB file round trip (\(runtime)): resident memory grew by \(growth >> 20) MiB")
            #expect(growth < 64 << 20, "the host grew by \(growth >> 20) MiB")
        }
    }
}

extension ControlFileTests {
    /// Prints a path's stat through python: coreutils' stat fails under gVisor here (its statx
    /// gives EINVAL, with or without corral).
    static func statCommand(_ format: String, _ path: String) -> SandboxCommand {
        SandboxCommand([
            "python3", "-c",
            "import os, sys; s = os.stat(sys.argv[2]); print(sys.argv[1] % {'mode': s.st_mode & 0o7777, 'uid': s.st_uid, 'gid': s.st_gid, 'size': s.st_size})",
            format, path,
        ])
    }
}

/// `total` bytes of `StreamPattern`, 256 KiB at a time, made as they are asked for.
struct GeneratedChunks: AsyncSequence, Sendable {
    typealias Element = [UInt8]
    let total: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        let total: Int
        var offset = 0
        mutating func next() async -> [UInt8]? {
            guard offset < total else { return nil }
            let chunk = StreamPattern.bytes(at: offset, count: Swift.min(256 << 10, total - offset))
            offset += chunk.count
            return chunk
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(total: total) }
}
