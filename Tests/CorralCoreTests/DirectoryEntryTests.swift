import CorralPOSIX
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("readdir's names read in place")
struct DirectoryEntryTests {
    @Test("every name comes back exactly: short, the longest allowed (255 bytes), and not UTF-8")
    func names() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-dirent-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // Thousands of names of every length fill many of glibc's readdir buffers, so that
        // records end at their edges.
        var expected: Set<[UInt8]> = [[0x66, 0xFF, 0xFE], Array(repeating: UInt8(ascii: "n"), count: 255)]
        for index in 0..<3000 { expected.insert(Array("f\(index)-\(String(repeating: "x", count: index % 200))".utf8)) }
        for name in expected {
            let path = Array(directory.path.utf8) + [UInt8(ascii: "/")] + name + [0]
            let fd = path.withUnsafeBufferPointer {
                open(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), O_CREAT | O_WRONLY, 0o600)
            }
            #expect(fd >= 0)
            close(fd)
        }
        let stream = try #require(opendir(directory.path))
        defer { closedir(stream) }
        var seen: Set<[UInt8]> = []
        while let entry = readdir(stream) {
            let name = DirectoryEntry.nameBytes(entry)
            if name != [0x2E] && name != [0x2E, 0x2E] { seen.insert(name) }
        }
        #expect(seen == expected)
    }
}
