import CorralCore
import Foundation
import TarArchive
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Writing and reading tar streams")
struct RoundTripTests {
    @Test("files, directories and links keep their type, mode, owner, time and data")
    func entriesRoundTrip() throws {
        let bytes = try makeArchive { writer in
            try writer.addDirectory(path: "app", mode: 0o750, uid: 1000, gid: 1000, mtime: fixedTime)
            try writer.addFile(
                path: "app/run.sh", contents: Array("#!/bin/sh\necho hi\n".utf8), mode: 0o4755, uid: 1000, gid: 1001,
                mtime: fixedTime)
            try writer.addFile(path: "app/empty", contents: [], mode: 0o600, uid: 0, gid: 0, mtime: fixedTime)
            try writer.addSymlink(path: "app/latest", target: "run.sh", uid: 1000, gid: 1000, mtime: fixedTime)
            try writer.addHardLink(path: "app/again.sh", target: "app/run.sh", uid: 1000, gid: 1001, mtime: fixedTime)
        }
        let entries = try readAll(TarReader(bytes: bytes))
        try #require(entries.count == 5)

        let directory = entries[0].entry
        #expect(directory.path == "app/")
        #expect(directory.type == .directory)
        #expect(directory.mode == 0o750)
        #expect(directory.uid == 1000 && directory.gid == 1000)
        #expect(directory.mtime == fixedTime)

        let script = entries[1]
        #expect(script.entry.path == "app/run.sh")
        #expect(script.entry.type == .file)
        #expect(script.entry.mode == 0o4755)
        #expect(script.entry.uid == 1000 && script.entry.gid == 1001)
        #expect(script.entry.size == 18)
        #expect(script.data == Array("#!/bin/sh\necho hi\n".utf8))

        #expect(entries[2].entry.size == 0 && entries[2].data.isEmpty && entries[2].entry.mode == 0o600)

        #expect(entries[3].entry.type == .symlink)
        #expect(entries[3].entry.linkTarget == "run.sh")

        #expect(entries[4].entry.type == .hardlink)
        #expect(entries[4].entry.linkTarget == "app/run.sh")
    }

    @Test("names that need pax headers survive: long, non-ASCII, and a large uid")
    func paxNames() throws {
        let long = String(repeating: "deep/", count: 40) + "file.txt"
        let accented = "données/été-ünïcödé-文件.txt"
        let bytes = try makeArchive { writer in
            try writer.addFile(path: long, contents: [1, 2, 3], mtime: fixedTime)
            try writer.addFile(path: accented, contents: [4], uid: 3_000_000, gid: 3_000_001, mtime: fixedTime)
            try writer.addSymlink(path: "lien", target: accented, mtime: fixedTime)
        }
        let entries = try readAll(TarReader(bytes: bytes))
        #expect(entries.map(\.entry.path) == [long, accented, "lien"])
        #expect(entries[1].entry.uid == 3_000_000 && entries[1].entry.gid == 3_000_001)
        #expect(entries[2].entry.linkTarget == accented)
    }

    @Test("ustar refuses what it cannot hold, naming the entry")
    func ustarLimits() throws {
        let writer = try TarWriter(format: .ustar)
        expectError(.invalidArgument, naming: String(repeating: "x", count: 300)) {
            try writer.addFile(path: String(repeating: "x", count: 300), contents: [])
        }
    }

    @Test("a sink receives the same archive as memory does, in chunks of about 64 KiB")
    func sinkChunks() throws {
        let big = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var chunks: [Int] = []
        var streamed: [UInt8] = []
        let writer = try TarWriter(sink: { chunk in
            chunks.append(chunk.count)
            streamed += chunk
        })
        try writer.addFile(path: "big.bin", contents: big, mtime: fixedTime)
        try writer.addDirectory(path: "d", mtime: fixedTime)
        #expect(try writer.finish().isEmpty)

        #expect(chunks.count > 40)
        #expect(chunks.allSatisfy { $0 <= 64 * 1024 + 10240 })
        let entries = try readAll(TarReader(bytes: streamed))
        #expect(entries.map(\.entry.path) == ["big.bin", "d/"])
        #expect(entries[0].data == big)
    }

    @Test("an error thrown by the sink comes back unchanged and spends the writer")
    func sinkFailure() throws {
        struct Broken: Error, Equatable {}
        let writer = try TarWriter(sink: { _ in throw Broken() })
        #expect(throws: Broken.self) {
            try writer.addFile(path: "a", contents: [UInt8](repeating: 7, count: 200_000))
            try writer.finish()
        }
        #expect(throws: Broken.self) { try writer.addDirectory(path: "b") }
    }

    @Test("a finished writer refuses more entries")
    func finishedWriter() throws {
        let writer = try TarWriter()
        try writer.finish()
        #expect(throws: CorralError.self) { try writer.addDirectory(path: "late") }
    }

    @Test("addFile(from:) streams a host file with its own mode and time unless told otherwise")
    func hostFile() async throws {
        try await withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("data.bin")
            let contents = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 / 7) }
            try Data(contents).write(to: file)
            chmod(file.path, 0o640)
            var times = [timespec(tv_sec: 1_600_000_000, tv_nsec: 0), timespec(tv_sec: 1_600_000_000, tv_nsec: 0)]
            utimensat(AT_FDCWD, file.path, &times, 0)

            let bytes = try makeArchive { writer in
                try writer.addFile(path: "copy.bin", from: file)
                try writer.addFile(path: "owned.bin", from: file, mode: 0o600, uid: 1000, gid: 1000, mtime: fixedTime)
            }
            let entries = try readAll(TarReader(bytes: bytes))
            #expect(entries[0].data == contents)
            #expect(entries[0].entry.mode == 0o640)
            #expect(entries[0].entry.mtime == Date(timeIntervalSince1970: 1_600_000_000))
            #expect(
                entries[1].entry.mode == 0o600 && entries[1].entry.uid == 1000 && entries[1].entry.mtime == fixedTime)

            let writer = try TarWriter()
            expectError(.notFound, naming: directory.appendingPathComponent("missing").path) {
                try writer.addFile(path: "x", from: directory.appendingPathComponent("missing"))
            }
            expectError(.invalidArgument, naming: directory.path) { try writer.addFile(path: "x", from: directory) }
        }
    }

    @Test("addTree stores symlinks as links, never following them out of the tree")
    func treeKeepsLinks() async throws {
        try await withTemporaryDirectory { directory in
            let tree = directory.appendingPathComponent("tree")
            let secret = directory.appendingPathComponent("secret")
            try FileManager.default.createDirectory(
                at: tree.appendingPathComponent("sub"), withIntermediateDirectories: true)
            try FileManager.default.createDirectory(at: secret, withIntermediateDirectories: true)
            try Data("do not copy".utf8).write(to: secret.appendingPathComponent("key"))
            try Data("hello".utf8).write(to: tree.appendingPathComponent("sub/hello.txt"))
            try FileManager.default.createSymbolicLink(
                atPath: tree.appendingPathComponent("out").path, withDestinationPath: secret.path)
            try FileManager.default.createSymbolicLink(
                atPath: tree.appendingPathComponent("rel").path, withDestinationPath: "sub/hello.txt")
            link(tree.appendingPathComponent("sub/hello.txt").path, tree.appendingPathComponent("twin.txt").path)
            mkfifo(tree.appendingPathComponent("pipe").path, 0o644)

            let writer = try TarWriter()
            let summary = try writer.addTree(from: tree, as: "workspace", ownership: TarOwnership(uid: 1000, gid: 1000))
            let entries = try readAll(TarReader(bytes: try writer.finish()))

            #expect(
                entries.map(\.entry.path) == [
                    "workspace/", "workspace/out", "workspace/rel", "workspace/sub/", "workspace/sub/hello.txt",
                    "workspace/twin.txt",
                ])
            #expect(entries.allSatisfy { $0.entry.uid == 1000 && $0.entry.gid == 1000 })
            #expect(entries[1].entry.type == .symlink && entries[1].entry.linkTarget == secret.path)
            #expect(entries[2].entry.linkTarget == "sub/hello.txt")
            #expect(entries[4].data == Array("hello".utf8))
            #expect(entries[5].entry.type == .hardlink && entries[5].entry.linkTarget == "workspace/sub/hello.txt")
            #expect(!entries.contains { $0.data == Array("do not copy".utf8) })
            #expect(summary == TarWriter.TreeSummary(entries: 6, bytes: 5, skipped: 1))
        }
    }

    @Test("addTree with '.' puts a directory's children at the top, and refuses '..' in the name")
    func treeAtTop() async throws {
        try await withTemporaryDirectory { directory in
            try Data("a".utf8).write(to: directory.appendingPathComponent("a.txt"))
            let writer = try TarWriter()
            try writer.addTree(from: directory, as: ".")
            #expect(try readAll(TarReader(bytes: try writer.finish())).map(\.entry.path) == ["a.txt"])

            let refusing = try TarWriter()
            expectError(.invalidArgument, naming: "../up") { try refusing.addTree(from: directory, as: "../up") }
        }
    }

    @Test("a tree written with addTree extracts to the same files, modes, links and times")
    func treeThroughExtraction() async throws {
        try await withTemporaryDirectory { directory in
            let tree = directory.appendingPathComponent("tree")
            try FileManager.default.createDirectory(
                at: tree.appendingPathComponent("bin"), withIntermediateDirectories: true)
            try Data("#!/bin/sh\n".utf8).write(to: tree.appendingPathComponent("bin/tool"))
            chmod(tree.appendingPathComponent("bin/tool").path, 0o755)
            try Data("secret".utf8).write(to: tree.appendingPathComponent("private"))
            chmod(tree.appendingPathComponent("private").path, 0o600)
            try FileManager.default.createSymbolicLink(
                atPath: tree.appendingPathComponent("tool").path, withDestinationPath: "bin/tool")
            chmod(tree.appendingPathComponent("bin").path, 0o555)
            var times = [timespec(tv_sec: 1_500_000_000, tv_nsec: 0), timespec(tv_sec: 1_500_000_000, tv_nsec: 0)]
            utimensat(AT_FDCWD, tree.appendingPathComponent("bin").path, &times, 0)
            defer { chmod(tree.appendingPathComponent("bin").path, 0o755) }

            let writer = try TarWriter()
            try writer.addTree(from: tree, as: "tree")
            let out = directory.appendingPathComponent("out")
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            let summary = try TarExtractor.extract(from: TarReader(bytes: try writer.finish()), into: out)
            defer { chmod(out.appendingPathComponent("tree/bin").path, 0o755) }

            #expect(summary == TarExtractor.Summary(entries: 5, bytes: 16, skipped: 0))
            #expect(try snapshot(out.appendingPathComponent("tree")) == snapshot(tree))
            var info = stat()
            lstat(out.appendingPathComponent("tree/bin").path, &info)
            #expect(info.st_mtim.tv_sec == 1_500_000_000)
        }
    }

    @Test(
        "extraction gives entries the archive's owners when asked to preserve them",
        .enabled(if: runningAsRoot, "setting owners needs root"))
    func preservedOwners() async throws {
        try await withTemporaryDirectory { directory in
            let bytes = try makeArchive { writer in
                try writer.addDirectory(path: "home", mode: 0o750, uid: 1000, gid: 1000, mtime: fixedTime)
                try writer.addFile(
                    path: "home/suid", contents: [1], mode: 0o4755, uid: 1000, gid: 1001, mtime: fixedTime)
                try writer.addSymlink(path: "home/link", target: "suid", uid: 1002, gid: 1003, mtime: fixedTime)
            }
            try TarExtractor.extract(
                from: TarReader(bytes: bytes), into: directory, options: .init(ownership: .preserve))
            var info = stat()
            lstat(directory.appendingPathComponent("home").path, &info)
            #expect(info.st_uid == 1000 && info.st_gid == 1000 && info.st_mode & 0o7777 == 0o750)
            lstat(directory.appendingPathComponent("home/suid").path, &info)
            #expect(info.st_uid == 1000 && info.st_gid == 1001 && info.st_mode & 0o7777 == 0o4755)
            #expect(info.st_mtim.tv_sec == 1_700_000_000)
            lstat(directory.appendingPathComponent("home/link").path, &info)
            #expect(info.st_uid == 1002 && info.st_gid == 1003)

            let fixed = directory.appendingPathComponent("fixed")
            try FileManager.default.createDirectory(at: fixed, withIntermediateDirectories: true)
            try TarExtractor.extract(
                from: TarReader(bytes: bytes), into: fixed,
                options: .init(ownership: .fixed(TarOwnership(uid: 1000, gid: 1000))))
            lstat(fixed.appendingPathComponent("home/link").path, &info)
            #expect(info.st_uid == 1000 && info.st_gid == 1000)
        }
    }

    @Test("extraction as the current user drops set-user-id bits and leaves owners alone")
    func currentUserOwners() async throws {
        try await withTemporaryDirectory { directory in
            let bytes = try makeArchive { writer in
                try writer.addFile(path: "suid", contents: [1], mode: 0o6755, uid: 1000, gid: 1001, mtime: fixedTime)
            }
            try TarExtractor.extract(from: TarReader(bytes: bytes), into: directory)
            var info = stat()
            lstat(directory.appendingPathComponent("suid").path, &info)
            #expect(info.st_mode & 0o7777 == 0o755)
            #expect(info.st_uid == geteuid())
        }
    }
}
