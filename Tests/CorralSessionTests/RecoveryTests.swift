import CorralCore
import Foundation
import TestSupport
import Testing

@testable import CorralSession

@Suite("Recovery: torn tails, zero fill, bit flips, lost indexes")
struct RecoveryTests {
    /// A session with `count` events, written by one store that is then dropped.
    func populated(_ directory: URL, count: Int, segmentBytes: UInt64 = 64 << 20) async throws -> (SessionID, [Event]) {
        let store = makeStore(directory, segmentBytes: segmentBytes)
        let id = try await store.create().id
        let lease = try await store.currentLease(id)
        for index in 0..<count {
            _ = try await store.append(
                id, [event(id: "e\(index)", ["index": .int(Int64(index)), "text": "some words"])], lease: lease,
                durability: .none)
        }
        try await store.sync(id)
        return (id, try await store.all(id))
    }

    /// Takes the end marker off a segment that a `.none` writer left (records, then the
    /// marker), as a writer that died while overwriting it would have: returns the records.
    func removeEndMarker(_ path: String) throws -> [UInt8] {
        let bytes = try fileBytes(path)
        #expect(Array(bytes.suffix(8)) == LogFormat.endMarker, "the segment does not end with its end marker")
        let records = Array(bytes.dropLast(8))
        try Data(records).write(to: URL(fileURLWithPath: path))
        return records
    }

    func lastSegment(_ store: FileSessionStore, _ id: SessionID) throws -> String {
        let name = try sessionFiles(store, id).filter { $0.hasSuffix(".seg") }.last ?? ""
        return sessionPath(store, id, name)
    }

    @Test("a torn last record is cut off, kept in a .broken file, and the session goes on")
    func tornTail() async throws {
        try await withTemporaryDirectory { directory in
            let (id, events) = try await populated(directory, count: 20)
            let store = makeStore(directory)
            let segment = try lastSegment(store, id)
            let whole = try removeEndMarker(segment)
            // Half of a record, as a killed writer leaves it.
            var record: [UInt8] = []
            LogFormat.appendRecord(
                to: &record, seq: 21, epoch: 1, time: 0, id: Array("torn".utf8), type: Array("x".utf8),
                data: Array("{\"a\":1}".utf8))
            let torn = Array(record.prefix(record.count / 2))
            try appendBytes(torn, to: segment)

            #expect(try await store.session(id).head == 20)
            #expect(try await store.all(id) == events)
            #expect(try fileBytes(segment) == whole)
            let broken = sessionPath(store, id, (segment as NSString).lastPathComponent + ".\(whole.count).broken")
            #expect(try fileBytes(broken) == torn)
            let lease = try await store.currentLease(id)
            #expect(try await store.append(id, [event(id: "after")], lease: lease).firstSeq == 21)
        }
    }

    @Test("a zero-filled tail, as a machine crash leaves it, is cut off and kept aside")
    func zeroFilledTail() async throws {
        try await withTemporaryDirectory { directory in
            let (id, events) = try await populated(directory, count: 5)
            let store = makeStore(directory)
            let segment = try lastSegment(store, id)
            let size = try removeEndMarker(segment).count
            try appendBytes([UInt8](repeating: 0, count: 8192), to: segment)
            #expect(try await store.all(id) == events)
            #expect(try fileBytes(segment).count == size)
            #expect(try fileBytes(segment + ".\(size).broken") == [UInt8](repeating: 0, count: 8192))
        }
    }

    @Test("a flipped bit in a record with intact records after it refuses the session, says where, and changes nothing")
    func bitFlipInTail() async throws {
        try await withTemporaryDirectory { directory in
            let (id, events) = try await populated(directory, count: 10)
            let store = makeStore(directory)
            let segment = try lastSegment(store, id)
            var bytes = try fileBytes(segment)
            let offset = LogFormat.segmentHeaderSize + (bytes.count - LogFormat.segmentHeaderSize) / 10 * 5 + 44
            bytes[offset] ^= 0x01
            try Data(bytes).write(to: URL(fileURLWithPath: segment))
            let before = try sessionFiles(store, id)

            await #expect {
                _ = try await store.session(id)
            } throws: { error in
                guard let error = error as? CorralError else { return false }
                return error.code == .corrupted && error.message.contains(segment)
                    && error.message.contains("intact record follows")
                    && error.message.contains("seq 6 expected")
            }
            #expect(try fileBytes(segment) == bytes)
            #expect(try sessionFiles(store, id) == before)
            let listed = try await store.list()
            #expect(listed.first?.problem?.contains("damaged") == true)
            #expect(events.count == 10)
        }
    }

    @Test(
        "a flipped bit deep in history fails the read that reaches it, names the file and offset, and truncates nothing"
    )
    func bitFlipInHistory() async throws {
        try await withTemporaryDirectory { directory in
            let (id, events) = try await populated(directory, count: 300)
            let store = makeStore(directory)
            let segment = try lastSegment(store, id)
            var bytes = try fileBytes(segment)
            // Find record 10 by walking the frames.
            var offset = LogFormat.segmentHeaderSize
            for _ in 1..<10 {
                let body = bytes[offset..<offset + 4].withUnsafeBytes { Int($0.loadLittleEndian(UInt32.self, at: 0)) }
                offset += LogFormat.aligned(8 + body)
            }
            bytes[offset + 60] ^= 0x40
            try Data(bytes).write(to: URL(fileURLWithPath: segment))

            await #expect {
                _ = try await store.all(id)
            } throws: { error in
                guard let error = error as? CorralError else { return false }
                return error.code == .corrupted && error.message.contains("byte \(offset) of \(segment)")
                    && error.message.contains("seq 10 expected")
            }
            // Later events are still readable through the index, and the session still takes appends.
            #expect(try await store.readPage(id, from: 200, limit: 10).events == Array(events[199..<209]))
            let lease = try await store.currentLease(id)
            #expect(try await store.append(id, [event()], lease: lease).firstSeq == 301)
            // The new event went where the end marker was; nothing before it changed.
            #expect(try fileBytes(segment).count > bytes.count)
            #expect(try fileBytes(segment).prefix(bytes.count - 8).elementsEqual(bytes.dropLast(8)))
        }
    }

    @Test("missing or damaged index files are rebuilt and reads stay right")
    func lostIndexes() async throws {
        try await withTemporaryDirectory { directory in
            let (id, events) = try await populated(directory, count: 400, segmentBytes: 8192)
            let store = makeStore(directory, segmentBytes: 8192)
            let indexes = try sessionFiles(store, id).filter { $0.hasSuffix(".idx") }
            #expect(indexes.count >= 3)
            for (position, name) in indexes.enumerated() {
                let path = sessionPath(store, id, name)
                if position % 2 == 0 {
                    try FileManager.default.removeItem(atPath: path)
                } else {
                    // Entries that point at the wrong places: every use is checked, so they cost
                    // speed, not correctness.
                    var bytes = try fileBytes(path)
                    for at in stride(from: LogFormat.indexHeaderSize + 16 + 8, to: bytes.count, by: 16) {
                        bytes[at] &+= 8
                    }
                    try Data(bytes).write(to: URL(fileURLWithPath: path))
                }
            }
            for from in stride(from: UInt64(1), to: 400, by: 37) {
                let page = try await store.readPage(id, from: from, limit: 25)
                #expect(page.events == Array(events[Int(from - 1)..<min(400, Int(from - 1) + 25)]))
            }
            #expect(try await store.all(id) == events)
            for (position, name) in indexes.enumerated() where position % 2 == 0 {
                #expect(FileManager.default.fileExists(atPath: sessionPath(store, id, name)), "\(name) was not rebuilt")
            }
        }
    }

    @Test("fsync appends lay zeroed runway after the end marker; reopening keeps it, and later appends write into it")
    func runwayIsCleanEnd() async throws {
        try await withTemporaryDirectory { directory in
            let store = makeStore(directory)
            let id = try await store.create().id
            let lease = try await store.currentLease(id)
            _ = try await store.append(id, [event(id: "a")], lease: lease)
            let segment = sessionPath(store, id, LogFormat.segmentName(1))
            let size = try fileBytes(segment).count
            #expect(size >= 1 << 20)
            let reopened = makeStore(directory)
            #expect(try await reopened.all(id).map(\.id.rawValue) == ["a"])
            _ = try await reopened.append(id, [event(id: "b")], lease: lease)
            #expect(try fileBytes(segment).count == size)
            #expect(try sessionFiles(reopened, id).filter { $0.hasSuffix(".broken") }.isEmpty)
            #expect(try await makeStore(directory).all(id).map(\.id.rawValue) == ["a", "b"])
        }
    }

    @Test("bytes after the end marker that are not zeros are damage: set aside when nothing intact follows")
    func garbageAfterMarker() async throws {
        try await withTemporaryDirectory { directory in
            let (id, events) = try await populated(directory, count: 3)
            let store = makeStore(directory)
            let segment = try lastSegment(store, id)
            let size = try fileBytes(segment).count
            try appendBytes(Array("leftover".utf8), to: segment)
            #expect(try await store.all(id) == events)
            #expect(try fileBytes(segment).count == size - 8)
            #expect(try fileBytes(segment + ".\(size - 8).broken") == LogFormat.endMarker + Array("leftover".utf8))
        }
    }

    @Test("random reads across dozens of segments stay right while the store closes and reopens segment files")
    func manySegments() async throws {
        try await withTemporaryDirectory { directory in
            let (id, events) = try await populated(directory, count: 600, segmentBytes: 2048)
            let store = makeStore(directory, segmentBytes: 2048)
            #expect(
                try sessionFiles(store, id).filter { $0.hasSuffix(".seg") }.count > 3
                    * SessionHandle.SealedCache.openFiles)
            var generator = SeededGenerator(seed: 11)
            for _ in 0..<300 {
                let from = Int.random(in: 1...600, using: &generator)
                let page = try await store.readPage(id, from: UInt64(from), limit: 7)
                #expect(page.events == Array(events[(from - 1)..<min(600, from + 6)]))
            }
        }
    }

    @Test("a segment whose creation was cut short is set aside and the log ends where it did")
    func tornSegmentCreation() async throws {
        try await withTemporaryDirectory { directory in
            let (id, events) = try await populated(directory, count: 50)
            let store = makeStore(directory)
            let orphan = sessionPath(store, id, LogFormat.segmentName(51))
            try Data(LogFormat.segmentHeader(firstSeq: 51).prefix(10)).write(to: URL(fileURLWithPath: orphan))
            #expect(try await store.all(id) == events)
            #expect(!FileManager.default.fileExists(atPath: orphan))
            #expect(FileManager.default.fileExists(atPath: orphan + ".0.broken"))
            let lease = try await store.currentLease(id)
            #expect(try await store.append(id, [event()], lease: lease).firstSeq == 51)
        }
    }
}
