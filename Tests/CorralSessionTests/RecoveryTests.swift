@testable import CorralSession
import CorralCore
import Foundation
import Testing
import TestSupport

@Suite("Recovery: torn tails, zero fill, bit flips, lost indexes")
struct RecoveryTests {
    /// A session with `count` events, written by one store that is then dropped.
    func populated(_ directory: URL, count: Int, segmentBytes: UInt64 = 64 << 20) async throws -> (SessionID, [Event]) {
        let store = makeStore(directory, segmentBytes: segmentBytes)
        let id = try await store.create().id
        let lease = try await store.currentLease(id)
        for index in 0..<count {
            _ = try await store.append(id, [event(id: "e\(index)", ["index": .int(Int64(index)), "text": "some words"])], lease: lease, durability: .none)
        }
        try await store.sync(id)
        return (id, try await store.all(id))
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
            let whole = try fileBytes(segment)
            // Half of a record, as a killed writer leaves it.
            var record: [UInt8] = []
            LogFormat.appendRecord(to: &record, seq: 21, epoch: 1, time: 0, id: Array("torn".utf8), type: Array("x".utf8), data: Array("{\"a\":1}".utf8))
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
            let size = try fileBytes(segment).count
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
                return error.code == .corrupted && error.message.contains(segment) && error.message.contains("intact record follows")
                    && error.message.contains("seq 6 expected")
            }
            #expect(try fileBytes(segment) == bytes)
            #expect(try sessionFiles(store, id) == before)
            let listed = try await store.list()
            #expect(listed.first?.problem?.contains("damaged") == true)
            #expect(events.count == 10)
        }
    }

    @Test("a flipped bit deep in history fails the read that reaches it, names the file and offset, and truncates nothing")
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
                return error.code == .corrupted && error.message.contains("byte \(offset) of \(segment)") && error.message.contains("seq 10 expected")
            }
            // Later events are still readable through the index, and the session still takes appends.
            #expect(try await store.readPage(id, from: 200, limit: 10).events == Array(events[199..<209]))
            let lease = try await store.currentLease(id)
            #expect(try await store.append(id, [event()], lease: lease).firstSeq == 301)
            #expect(try fileBytes(segment).count > bytes.count)
            #expect(try fileBytes(segment).prefix(bytes.count).elementsEqual(bytes))
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
                    for at in stride(from: LogFormat.indexHeaderSize + 16 + 8, to: bytes.count, by: 16) { bytes[at] &+= 8 }
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
