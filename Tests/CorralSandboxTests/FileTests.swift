import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import TarArchive
import TestSupport
import Testing

@Suite("Files in and out, and the text editor tool", .engine)
struct FileTests {
    func edit(_ sandbox: Sandbox, _ input: JSONValue) async throws -> ToolOutput {
        try await sandbox.execute(tool: "str_replace_based_edit_tool", input: input)
    }

    @Test("create, view, str_replace and insert work, and their errors are clear")
    func editor() async throws {
        let fixture = try EngineFixture()
        try await fixture.withSandbox { sandbox in
            let path = "/workspace/notes.txt"
            let created = try await edit(
                sandbox, ["command": "create", "path": .string(path), "file_text": "alpha\nbeta\ngamma\n"])
            #expect(!created.isError, "\(created.text)")
            let owner = try await fixture.bash(sandbox, "stat -c %u:%g \(path); cat \(path)")
            #expect(owner.text == "\(SandboxUser(for: sandbox.id))\nalpha\nbeta\ngamma\n")

            let again = try await edit(sandbox, ["command": "create", "path": .string(path), "file_text": "x"])
            #expect(again.isError)
            #expect(again.text.contains("already exists"))

            let view = try await edit(sandbox, ["command": "view", "path": .string(path)])
            #expect(view.text == "     1\talpha\n     2\tbeta\n     3\tgamma")
            let range = try await edit(sandbox, ["command": "view", "path": .string(path), "view_range": [2, -1]])
            #expect(range.text == "     2\tbeta\n     3\tgamma")
            let badRange = try await edit(sandbox, ["command": "view", "path": .string(path), "view_range": [5, 9]])
            #expect(badRange.isError)

            let replaced = try await edit(
                sandbox, ["command": "str_replace", "path": .string(path), "old_str": "beta", "new_str": "BETA"])
            #expect(!replaced.isError)
            #expect(replaced.text.contains("2\tBETA"))

            let noMatch = try await edit(
                sandbox, ["command": "str_replace", "path": .string(path), "old_str": "delta", "new_str": "x"])
            #expect(noMatch.isError)
            #expect(noMatch.text.contains("did not appear verbatim"))

            _ = try await edit(
                sandbox, ["command": "insert", "path": .string(path), "insert_line": 0, "insert_text": "a\na"])
            let twice = try await edit(
                sandbox, ["command": "str_replace", "path": .string(path), "old_str": "a\n", "new_str": "z"])
            #expect(twice.isError)
            #expect(twice.text.contains("occurs"))
            #expect(twice.text.contains("lines 1, 2"))

            let inserted = try await edit(
                sandbox, ["command": "insert", "path": .string(path), "insert_line": 5, "new_str": "omega"])
            #expect(!inserted.isError, "\(inserted.text)")
            let final = try await fixture.bash(sandbox, "cat \(path)")
            #expect(final.text == "a\na\nalpha\nBETA\ngamma\nomega\n")

            let directory = try await edit(sandbox, ["command": "view", "path": "/workspace"])
            #expect(directory.text.contains("/workspace/notes.txt"))

            let missing = try await edit(sandbox, ["command": "view", "path": "/workspace/nope"])
            #expect(missing.isError)
            #expect(missing.text.contains("does not exist"))

            let relative = try await edit(sandbox, ["command": "view", "path": "notes.txt"])
            #expect(relative.isError)
            let readOnly = try await edit(sandbox, ["command": "create", "path": "/etc/evil", "file_text": "x"])
            #expect(readOnly.isError)
            #expect(readOnly.text.contains("read-only"))
            let traversal = try await edit(sandbox, ["command": "view", "path": "/workspace/../etc/passwd"])
            #expect(traversal.isError)
            let unknown = try await edit(sandbox, ["command": "delete", "path": .string(path)])
            #expect(unknown.isError)
        }
    }

    @Test("a file keeps its mode across edits")
    func keepsMode() async throws {
        let fixture = try EngineFixture()
        try await fixture.withSandbox { sandbox in
            _ = try await fixture.bash(
                sandbox, "printf 'echo one\\n' > /workspace/run.sh && chmod 755 /workspace/run.sh")
            _ = try await edit(
                sandbox, ["command": "str_replace", "path": "/workspace/run.sh", "old_str": "one", "new_str": "two"])
            let output = try await fixture.bash(sandbox, "/workspace/run.sh; stat -c %a /workspace/run.sh")
            #expect(output.text == "two\n755\n")
        }
    }

    @Test("copy a directory in and back out, with contents and ownership intact")
    func copyRoundTrip() async throws {
        let fixture = try EngineFixture()
        try await withTemporaryDirectory { directory in
            let source = directory.appendingPathComponent("project")
            try FileManager.default.createDirectory(
                at: source.appendingPathComponent("src"), withIntermediateDirectories: true)
            try Data("print('hi')\n".utf8).write(to: source.appendingPathComponent("src/main.py"))
            try Data(repeating: 7, count: 300_000).write(to: source.appendingPathComponent("blob.bin"))
            try await fixture.withSandbox { sandbox in
                try await sandbox.copyIn(from: source, to: "/workspace")
                let inside = try await fixture.bash(
                    sandbox,
                    "cd /workspace/project && python3 src/main.py && stat -c %u:%g src/main.py && wc -c < blob.bin")
                #expect(inside.text == "hi\n\(SandboxUser(for: sandbox.id))\n300000\n")

                let back = directory.appendingPathComponent("back")
                try await sandbox.copyOut("/workspace/project", to: back)
                #expect(try Data(contentsOf: back.appendingPathComponent("src/main.py")) == Data("print('hi')\n".utf8))
                #expect(try Data(contentsOf: back.appendingPathComponent("blob.bin")).count == 300_000)

                // A single file to a new name.
                try await sandbox.copyIn(
                    from: source.appendingPathComponent("src/main.py"), to: "/workspace/renamed.py")
                let renamed = try await fixture.bash(sandbox, "cat /workspace/renamed.py")
                #expect(renamed.text == "print('hi')\n")
            }
        }
    }

    @Test("a tar with traversal is refused on the way in, and nothing lands")
    func traversalIn() async throws {
        let fixture = try EngineFixture()
        let writer = try TarWriter()
        try writer.addFile(path: "fine.txt", contents: Array("ok".utf8))
        try writer.addFile(path: "../escape.txt", contents: Array("bad".utf8))
        let hostile = try writer.finish()
        try await fixture.withSandbox { sandbox in
            let source = ChunkSource(hostile)
            do {
                try await sandbox.copyIn(tar: { source.next() }, to: "/workspace")
                Issue.record("expected a refusal")
            } catch let error as CorralError {
                #expect(error.description.contains("../escape.txt"))
            }
            let listing = try await fixture.bash(sandbox, "ls -A /workspace /; ls / | grep -c escape || true")
            #expect(!listing.text.contains("fine.txt"))
            #expect(listing.text.hasSuffix("0\n"))
        }
    }

    @Test("a symlink that points out of the copy is refused on the way out, and nothing lands")
    func linkOut() async throws {
        let fixture = try EngineFixture()
        try await withTemporaryDirectory { directory in
            try await fixture.withSandbox { sandbox in
                _ = try await fixture.bash(
                    sandbox,
                    "mkdir -p /workspace/out && echo a > /workspace/out/a && ln -s /etc/passwd /workspace/out/link")
                let target = directory.appendingPathComponent("copy")
                do {
                    try await sandbox.copyOut("/workspace/out", to: target)
                    Issue.record("expected a refusal")
                } catch let error as CorralError {
                    #expect(error.description.contains("link"))
                }
                #expect(!FileManager.default.fileExists(atPath: target.path))
                #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)
            }
        }
    }

    @Test("sandbox paths with '..' or no leading slash are refused")
    func badPaths() async throws {
        let fixture = try EngineFixture()
        let sandbox = fixture.provisioner.handle(SandboxID.random())
        for path in ["relative/path", "/workspace/../etc", "/a/./b"] {
            await #expect(throws: CorralError.self) { _ = try await sandbox.readFile(path, limit: 10) }
        }
    }
}

/// Hands out an in-memory archive in odd-sized pieces.
final class ChunkSource: @unchecked Sendable {
    private var bytes: [UInt8]
    private let lock = NSLock()
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    func next() -> [UInt8]? {
        lock.lock()
        defer { lock.unlock() }
        guard !bytes.isEmpty else { return nil }
        let piece = Array(bytes.prefix(777))
        bytes.removeFirst(piece.count)
        return piece
    }
}
