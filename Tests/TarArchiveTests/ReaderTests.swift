import CorralCore
import Foundation
import TarArchive
import TestSupport
import Testing

@Suite("Reading tar streams from pull sources, memory and files")
struct ReaderTests {
    static let sample: [UInt8] = {
        let payload = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
        return
            (try? makeArchive { writer in
                try writer.addDirectory(path: "d", mtime: fixedTime)
                try writer.addFile(path: "d/small", contents: Array("small".utf8), mtime: fixedTime)
                try writer.addFile(path: "d/payload", contents: payload, mtime: fixedTime)
                try writer.addSymlink(path: "d/link", target: "payload", mtime: fixedTime)
            }) ?? []
    }()

    /// A pull source that hands out `bytes` in the given chunk sizes, cycling, with an empty
    /// chunk now and then (which must not read as the end).
    static func chunkedSource(_ bytes: [UInt8], sizes: [Int]) -> () throws -> [UInt8]? {
        var offset = 0
        var turn = 0
        return {
            guard offset < bytes.count else { return nil }
            turn += 1
            if turn % 5 == 0 { return [] }
            let end = min(bytes.count, offset + sizes[turn % sizes.count])
            defer { offset = end }
            return Array(bytes[offset..<end])
        }
    }

    @Test(
        "odd chunk sizes from a pull source give the same entries and data",
        arguments: [[1], [7, 511], [513, 3], [4097, 65537], [1 << 20]])
    func oddChunks(sizes: [Int]) throws {
        let expected = try readAll(TarReader(bytes: Self.sample))
        let reader = try TarReader(pull: Self.chunkedSource(Self.sample, sizes: sizes))
        let got = try readAll(reader)
        #expect(got.map(\.entry) == expected.map(\.entry))
        #expect(got.map(\.data) == expected.map(\.data))
        #expect(got.map(\.entry.path) == ["d/", "d/small", "d/payload", "d/link"])
        #expect(try reader.nextEntry() == nil)
    }

    @Test("readChunk streams an entry in pieces no larger than asked, and unread data is skipped")
    func chunkedData() throws {
        let reader = try TarReader(pull: Self.chunkedSource(Self.sample, sizes: [1000]))
        _ = try reader.nextEntry()
        #expect(try reader.readChunk() == nil)  // a directory has no data
        _ = try reader.nextEntry()  // d/small, left unread
        let payload = try #require(try reader.nextEntry())
        #expect(payload.path == "d/payload")
        var total = 0
        while let chunk = try reader.readChunk(maxLength: 3000) {
            #expect(chunk.count <= 3000)
            total += chunk.count
        }
        #expect(total == 200_000)
        #expect(try reader.nextEntry()?.type == .symlink)
    }

    @Test("readData refuses an entry over its cap without reading it, and the reader moves on")
    func sizeCap() throws {
        let reader = try TarReader(bytes: Self.sample)
        while let entry = try reader.nextEntry(), entry.path != "d/payload" {}
        let error = expectError(.resourceExhausted, naming: "d/payload") { _ = try reader.readData(maxBytes: 100_000) }
        #expect(error?.message.contains("200000") == true)
        #expect(try reader.nextEntry()?.path == "d/link")
    }

    @Test("a 256 MiB entry from a stream is refused under a 1 MiB cap, yet streams through readChunk")
    func giantEntry() throws {
        let size = 256 << 20
        /// Header, then zeros made on demand, then the end blocks: nothing near 256 MiB is
        /// ever held, by the source or, if the reader streams, by the reader.
        func source() -> () throws -> [UInt8]? {
            var header: [UInt8]? = RawTar.header(name: "huge.bin", type: "0", size: size)
            var left = size
            var ended = false
            return {
                if let first = header {
                    header = nil
                    return first
                }
                if left > 0 {
                    let count = min(left, 64 * 1024)
                    left -= count
                    return [UInt8](repeating: 0, count: count)
                }
                if ended { return nil }
                ended = true
                return RawTar.end
            }
        }
        let capped = try TarReader(pull: source())
        #expect(try capped.nextEntry()?.size == Int64(size))
        expectError(.resourceExhausted, naming: "huge.bin") { _ = try capped.readData(maxBytes: 1 << 20) }
        #expect(try capped.nextEntry() == nil)

        let streamed = try TarReader(pull: source())
        _ = try streamed.nextEntry()
        var total = 0
        while let chunk = try streamed.readChunk() {
            #expect(chunk.count <= 64 * 1024)
            total += chunk.count
        }
        #expect(total == size)
    }

    @Test("caps and chunk lengths at the extremes of Int neither overflow nor over-allocate")
    func extremeLimits() throws {
        let reader = try TarReader(bytes: Self.sample)
        while let entry = try reader.nextEntry(), entry.path != "d/small" {}
        #expect(try reader.readChunk(maxLength: Int.max) == Array("small".utf8))
        _ = try reader.nextEntry()
        #expect(try reader.readData(maxBytes: Int.max).count == 200_000)
        #expect(throws: CorralError.self) { try reader.readChunk(maxLength: 0) }
        #expect(throws: CorralError.self) { try reader.readData(maxBytes: -1) }
    }

    @Test("a source that has said 'end' is not pulled again")
    func noPullAfterEnd() throws {
        // No end-of-archive blocks: libarchive must hit the source's end to finish.
        let bytes = RawTar.file(name: "a", contents: [1, 2, 3]) + RawTar.file(name: "b", contents: [4])
        var offset = 0
        var pullsAfterEnd = 0
        let reader = try TarReader(pull: {
            guard offset < bytes.count else {
                pullsAfterEnd += 1
                return nil
            }
            defer { offset += 512 }
            return Array(bytes[offset..<offset + 512])
        })
        #expect(try readAll(reader).map(\.data) == [[1, 2, 3], [4]])
        #expect(try reader.nextEntry() == nil)
        #expect(pullsAfterEnd == 1)
    }

    @Test("an error thrown by the source comes back unchanged and spends the reader")
    func sourceFailure() throws {
        struct Dropped: Error {}
        var served = 0
        let reader = try TarReader(pull: {
            served += 1
            if served > 3 { throw Dropped() }
            return Array(Self.sample[(served - 1) * 1024..<served * 1024])
        })
        #expect(throws: Dropped.self) { _ = try readAll(reader) }
        #expect(throws: Dropped.self) { _ = try reader.nextEntry() }
    }

    @Test("a truncated archive is an error, not a short read")
    func truncated() throws {
        let reader = try TarReader(bytes: Array(Self.sample.prefix(100_000)))
        #expect(throws: CorralError.self) { _ = try readAll(reader) }
    }

    @Test("input that is not a tar archive is refused with libarchive's reason")
    func garbage() throws {
        do {
            let reader = try TarReader(bytes: Array(repeating: 0x41, count: 4096))
            _ = try reader.nextEntry()
            Issue.record("garbage read as a tar archive")
        } catch let error as CorralError {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("format"), "\(error.message)")
            #expect(error.hint != nil)
        }
    }

    @Test("an empty input is an empty archive")
    func empty() throws {
        #expect(try TarReader(bytes: []).nextEntry() == nil)
        #expect(try TarReader(pull: { nil }).nextEntry() == nil)
    }

    @Test("a reader over a file gives the same entries as one over memory, and a missing file is named")
    func fromFile() async throws {
        try await withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("sample.tar")
            try Data(Self.sample).write(to: file)
            let fromFile = try readAll(TarReader(contentsOf: file))
            let fromMemory = try readAll(TarReader(bytes: Self.sample))
            #expect(fromFile.map(\.entry) == fromMemory.map(\.entry))
            #expect(fromFile.map(\.data) == fromMemory.map(\.data))
            let missing = directory.appendingPathComponent("missing.tar")
            expectError(.notFound, naming: missing.path) { _ = try TarReader(contentsOf: missing) }
        }
    }

    @Test("special entries read as .other with their kind named")
    func specialEntries() throws {
        let bytes = RawTar.header(name: "dev/null", type: "3") + RawTar.header(name: "pipe", type: "6") + RawTar.end
        let entries = try readAll(TarReader(bytes: bytes))
        #expect(entries.map(\.entry.type) == [.other, .other])
        #expect(entries.map(\.entry.kindDescription) == ["character device", "FIFO"])
    }
}
