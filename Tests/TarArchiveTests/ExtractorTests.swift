import CorralCore
import Foundation
import TarArchive
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Extracting archives without letting them escape")
struct ExtractorTests {
    @Test(
        "hostile archives are refused, the error names the entry, and nothing outside changes",
        arguments: HostileArchive.all)
    func refusals(hostile: HostileArchive) async throws {
        try await withTemporaryDirectory { base in
            let playground = try Playground(base)
            let before = try playground.outsideSnapshot()
            let bytes = try hostile.build(playground.outside.path)

            expectError(.permissionDenied, naming: hostile.refusedEntry) {
                try TarExtractor.extract(from: TarReader(bytes: bytes), into: playground.target)
            }
            #expect(try playground.outsideSnapshot() == before)
            #expect(!FileManager.default.fileExists(atPath: "/tmp/corral-absolute-evil"))
            // Whatever did land inside stays inside: no symlink there resolves to anywhere else.
            let inside = try #require(resolvedPath(playground.target.path))
            for (path, description) in try snapshot(playground.target) where description.hasPrefix("link -> ") {
                guard let resolved = resolvedPath(playground.target.path + "/" + path) else { continue }  // dangling
                #expect(resolved.hasPrefix(inside + "/") || resolved == inside, "\(path) \(description)")
            }
        }
    }

    @Test("a symlink already in the target directory is never written through")
    func existingSymlink() async throws {
        try await withTemporaryDirectory { base in
            let playground = try Playground(base)
            try FileManager.default.createSymbolicLink(
                atPath: playground.target.appendingPathComponent("pre").path,
                withDestinationPath: playground.outside.path)
            let before = try playground.outsideSnapshot()
            let bytes = try makeArchive { try $0.addFile(path: "pre/sentinel", contents: Array("owned\n".utf8)) }

            let error = expectError(.permissionDenied, naming: "pre/sentinel") {
                try TarExtractor.extract(from: TarReader(bytes: bytes), into: playground.target)
            }
            #expect(error?.message.contains("symlink 'pre'") == true)
            #expect(try playground.outsideSnapshot() == before)
        }
    }

    @Test("a file that is a hard link to something outside is replaced, not written into")
    func existingHardLink() async throws {
        try await withTemporaryDirectory { base in
            let playground = try Playground(base)
            let inside = playground.target.appendingPathComponent("f")
            #expect(link(playground.outside.appendingPathComponent("sentinel").path, inside.path) == 0)
            let before = try playground.outsideSnapshot()
            let bytes = try makeArchive { try $0.addFile(path: "f", contents: Array("new\n".utf8)) }

            try TarExtractor.extract(from: TarReader(bytes: bytes), into: playground.target)
            #expect(try playground.outsideSnapshot() == before)
            #expect(try String(contentsOf: inside, encoding: .utf8) == "new\n")
        }
    }

    @Test("entries before a refused one stay; the refused one and everything after it are not written")
    func partialOutput() async throws {
        try await withTemporaryDirectory { base in
            let playground = try Playground(base)
            let bytes = try makeArchive { writer in
                try writer.addFile(path: "first.txt", contents: [1])
                try writer.addFile(path: "../outside/evil", contents: [2])
                try writer.addFile(path: "later.txt", contents: [3])
            }
            expectError(.permissionDenied, naming: "../outside/evil") {
                try TarExtractor.extract(from: TarReader(bytes: bytes), into: playground.target)
            }
            #expect(try snapshot(playground.target).keys.sorted() == ["first.txt"])
        }
    }

    @Test("links that stay inside are extracted, including leading '..' and './' names")
    func linksInside() async throws {
        try await withTemporaryDirectory { directory in
            let bytes = try makeArchive { writer in
                try writer.addDirectory(path: "./")
                try writer.addDirectory(path: "./usr/bin")
                try writer.addFile(path: "./usr/bin/dash", contents: Array("#!".utf8), mode: 0o755)
                try writer.addDirectory(path: "bin")
                try writer.addSymlink(path: "bin/sh", target: "../usr/bin/dash")
                try writer.addSymlink(path: "usr/bin/sh", target: "./dash")
                try writer.addSymlink(path: "here", target: ".")
                try writer.addHardLink(path: "usr/bin/ash", target: "./usr/bin/dash")
            }
            chmod(directory.path, 0o711)
            let summary = try TarExtractor.extract(from: TarReader(bytes: bytes), into: directory)
            #expect(summary == TarExtractor.Summary(entries: 8, bytes: 2, skipped: 0))
            #expect(try String(contentsOfFile: directory.path + "/bin/sh", encoding: .utf8) == "#!")
            var dash = stat()
            var ash = stat()
            lstat(directory.path + "/usr/bin/dash", &dash)
            lstat(directory.path + "/usr/bin/ash", &ash)
            #expect(dash.st_ino == ash.st_ino)
            // The './' entry stands for the target directory, whose mode stays the caller's.
            var root = stat()
            lstat(directory.path, &root)
            #expect(root.st_mode & 0o777 == 0o711)
        }
    }

    @Test("special files are skipped when asked, and counted")
    func skipSpecialFiles() async throws {
        try await withTemporaryDirectory { directory in
            let bytes =
                RawTar.header(name: "dev/null", type: "3") + RawTar.file(name: "dev/readme", contents: Array("hi".utf8))
                + RawTar.header(name: "pipe", type: "6") + RawTar.end
            let summary = try TarExtractor.extract(
                from: TarReader(bytes: bytes), into: directory, options: .init(specialFiles: .skip))
            #expect(summary == TarExtractor.Summary(entries: 1, bytes: 2, skipped: 2))
            #expect(try snapshot(directory).keys.sorted() == ["dev", "dev/readme"])
        }
    }

    @Test("the cap on extracted bytes refuses the entry that would pass it")
    func totalCap() async throws {
        try await withTemporaryDirectory { directory in
            let bytes = try makeArchive { writer in
                try writer.addFile(path: "a", contents: [UInt8](repeating: 1, count: 600))
                try writer.addFile(path: "b", contents: [UInt8](repeating: 2, count: 600))
            }
            expectError(.resourceExhausted, naming: "b") {
                try TarExtractor.extract(
                    from: TarReader(bytes: bytes), into: directory, options: .init(maxTotalBytes: 1000))
            }
            #expect(try snapshot(directory).keys.sorted() == ["a"])
        }
    }

    @Test("a header claiming an entry of 2^62 bytes is refused by the caps, and ends cleanly without them")
    func lyingSize() async throws {
        try await withTemporaryDirectory { directory in
            let bytes = RawTar.hugeFileHeader(name: "liar", size: 1 << 62) + RawTar.end
            let reader = try TarReader(bytes: bytes)
            #expect(try reader.nextEntry()?.size == 1 << 62)
            expectError(.resourceExhausted, naming: "liar") { _ = try reader.readData(maxBytes: 1 << 30) }
            expectError(.resourceExhausted, naming: "liar") {
                try TarExtractor.extract(
                    from: TarReader(bytes: bytes), into: directory, options: .init(maxTotalBytes: 1 << 30))
            }
            expectError(.resourceExhausted, naming: "liar") {
                try TarValidator.validate(
                    from: TarReader(bytes: bytes), into: TarWriter(), options: .init(maxTotalBytes: 1 << 30))
            }
            #expect(try snapshot(directory).isEmpty)
            // Uncapped, the missing data ends it; the abandoned writer, whose header promised
            // 2^62 bytes, must not try to pad them out when it is freed.
            expectError(.invalidArgument, naming: "liar") {
                try TarValidator.validate(from: TarReader(bytes: bytes), into: TarWriter())
            }
        }
    }

    @Test("a non-empty directory is never replaced by a file")
    func directoryInTheWay() async throws {
        try await withTemporaryDirectory { directory in
            try FileManager.default.createDirectory(
                at: directory.appendingPathComponent("d"), withIntermediateDirectories: true)
            try Data([1]).write(to: directory.appendingPathComponent("d/keep"))
            let bytes = try makeArchive { try $0.addFile(path: "d", contents: [2]) }
            expectError(.invalidArgument, naming: "d") {
                try TarExtractor.extract(from: TarReader(bytes: bytes), into: directory)
            }
            #expect(FileManager.default.fileExists(atPath: directory.appendingPathComponent("d/keep").path))
        }
    }

    @Test("a hard link to a file the archive never had is an error naming the link")
    func danglingHardLink() async throws {
        try await withTemporaryDirectory { directory in
            let bytes = try makeArchive { try $0.addHardLink(path: "h", target: "nowhere/file") }
            expectError(.invalidArgument, naming: "h") {
                try TarExtractor.extract(from: TarReader(bytes: bytes), into: directory)
            }
        }
    }

    @Test("extracting into a directory that does not exist says so")
    func missingTarget() async throws {
        try await withTemporaryDirectory { directory in
            let missing = directory.appendingPathComponent("missing")
            let bytes = try makeArchive { try $0.addFile(path: "a", contents: [1]) }
            expectError(.notFound, naming: missing.path) {
                try TarExtractor.extract(from: TarReader(bytes: bytes), into: missing)
            }
        }
    }

    @Test("an empty directory that a later entry replaces is replaced, below the top too")
    func replacedDirectories() async throws {
        try await withTemporaryDirectory { directory in
            // The parent `d` is the extractor's cached one when `d/x` and `d/y` are replaced.
            let bytes = try makeArchive { writer in
                try writer.addDirectory(path: "d/x")
                try writer.addFile(path: "d/x", contents: Array("x".utf8), mode: 0o644)
                try writer.addDirectory(path: "d/y")
                try writer.addSymlink(path: "d/y", target: "x")
            }
            try TarExtractor.extract(from: TarReader(bytes: bytes), into: directory)
            let listing = try snapshot(directory)
            #expect(listing["d/x"] == "file 644 x (1 bytes)")
            #expect(listing["d/y"] == "link -> x")
        }
    }

    @Test("a read-only directory in the archive still receives its children")
    func readOnlyDirectory() async throws {
        try await withTemporaryDirectory { directory in
            let bytes = try makeArchive { writer in
                try writer.addDirectory(path: "ro", mode: 0o555, mtime: fixedTime)
                try writer.addFile(path: "ro/file", contents: [1], mode: 0o444)
            }
            try TarExtractor.extract(from: TarReader(bytes: bytes), into: directory)
            defer { chmod(directory.path + "/ro", 0o755) }
            #expect(try snapshot(directory)["ro"] == "dir 555")
            var info = stat()
            lstat(directory.path + "/ro", &info)
            #expect(info.st_mtim.tv_sec == 1_700_000_000)
        }
    }
}
