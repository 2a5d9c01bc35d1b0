import CorralCore
import Foundation
import TarArchive
import TestSupport
import Testing

@Suite("Re-streaming a user's tar through the checks")
struct ValidatorTests {
    @Test(
        "hostile archives are refused with the entry named, before it reaches the output", arguments: HostileArchive.all
    )
    func refusals(hostile: HostileArchive) throws {
        let bytes = try hostile.build("/tmp/corral-outside")
        var output: [UInt8] = []
        let writer = try TarWriter(sink: { output += $0 })
        expectError(.permissionDenied, naming: hostile.refusedEntry) {
            try TarValidator.validate(from: TarReader(bytes: bytes), into: writer)
        }
        // What did pass is flushed on finish; the refused entry must not be in it.
        try writer.finish()
        let passed = try readAll(TarReader(bytes: output))
        #expect(!passed.contains { $0.entry.path == hostile.refusedEntry })
    }

    @Test("a clean archive comes out with normalised names, forced owners and the same data")
    func cleanArchive() throws {
        let payload = (0..<150_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let input = try makeArchive { writer in
            try writer.addDirectory(path: "./", mode: 0o700)
            try writer.addDirectory(path: "./src//lib/", mode: 0o755, uid: 0, gid: 0, mtime: fixedTime)
            try writer.addFile(
                path: "./src/lib/data.bin", contents: payload, mode: 0o640, uid: 0, gid: 0, mtime: fixedTime)
            try writer.addSymlink(path: "src/current", target: "./lib/data.bin", mtime: fixedTime)
            try writer.addHardLink(path: "src/copy.bin", target: "./src/lib/data.bin", mtime: fixedTime)
        }
        var chunks = 0
        var output: [UInt8] = []
        let writer = try TarWriter(sink: {
            chunks += 1
            output += $0
        })
        let summary = try TarValidator.validate(
            from: TarReader(pull: ReaderTests.chunkedSource(input, sizes: [333, 4099])), into: writer,
            options: .init(ownership: TarOwnership(uid: 1000, gid: 1000)))
        try writer.finish()

        #expect(summary == TarValidator.Summary(entries: 4, bytes: 150_000, skipped: 1))
        let entries = try readAll(TarReader(bytes: output))
        #expect(entries.map(\.entry.path) == ["src/lib/", "src/lib/data.bin", "src/current", "src/copy.bin"])
        #expect(entries.allSatisfy { $0.entry.uid == 1000 && $0.entry.gid == 1000 })
        #expect(entries[1].data == payload)
        #expect(entries[1].entry.mode == 0o640 && entries[1].entry.mtime == fixedTime)
        #expect(entries[2].entry.linkTarget == "./lib/data.bin")
        #expect(entries[3].entry.linkTarget == "src/lib/data.bin")
    }

    @Test("special files are left out when asked, and counted")
    func skipSpecialFiles() throws {
        let input =
            RawTar.header(name: "dev/null", type: "3") + RawTar.file(name: "readme", contents: [1, 2]) + RawTar.end
        let writer = try TarWriter()
        let summary = try TarValidator.validate(
            from: TarReader(bytes: input), into: writer, options: .init(specialFiles: .skip))
        #expect(summary == TarValidator.Summary(entries: 1, bytes: 2, skipped: 1))
        #expect(try readAll(TarReader(bytes: try writer.finish())).map(\.entry.path) == ["readme"])
    }

    @Test("a symlink replaced by a directory no longer counts as a way through")
    func replacedSymlink() throws {
        let input = try makeArchive { writer in
            try writer.addSymlink(path: "a", target: "b")
            try writer.addDirectory(path: "a")
            try writer.addFile(path: "a/file", contents: [1])
        }
        let writer = try TarWriter()
        try TarValidator.validate(from: TarReader(bytes: input), into: writer)
        #expect(try readAll(TarReader(bytes: try writer.finish())).count == 3)
    }

    @Test("the cap on passed-through bytes refuses the entry that would pass it")
    func totalCap() throws {
        let input = try makeArchive { writer in
            try writer.addFile(path: "a", contents: [UInt8](repeating: 1, count: 600))
            try writer.addFile(path: "b", contents: [UInt8](repeating: 2, count: 600))
        }
        expectError(.resourceExhausted, naming: "b") {
            try TarValidator.validate(
                from: TarReader(bytes: input), into: TarWriter(), options: .init(maxTotalBytes: 1000))
        }
    }
}
