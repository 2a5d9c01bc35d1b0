/// The byte layout of segment files, records and index files (docs/session-store.md).
///
/// All integers are little-endian. A segment starts with a 32-byte header; records follow
/// back to back, each starting on an 8-byte boundary.
enum LogFormat {
    static let version: UInt32 = 1

    // MARK: Segment files

    static let segmentMagic: [UInt8] = Array("CORRALSG".utf8)
    static let segmentHeaderSize = 32
    static let segmentSuffix = ".seg"
    static let indexSuffix = ".idx"

    /// `00000000000000000001.seg`: the first sequence number, 20 digits, so names sort by seq.
    static func segmentName(_ firstSeq: UInt64) -> String { paddedSeq(firstSeq) + segmentSuffix }
    static func indexName(_ firstSeq: UInt64) -> String { paddedSeq(firstSeq) + indexSuffix }

    static func paddedSeq(_ seq: UInt64) -> String {
        let digits = String(seq)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    /// The first seq named by a segment file name, or nil for any other file.
    static func segmentFirstSeq(fromName name: String) -> UInt64? {
        guard name.utf8.count == 20 + segmentSuffix.utf8.count, name.hasSuffix(segmentSuffix) else { return nil }
        let digits = name.utf8.prefix(20)
        guard digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return UInt64(String(decoding: digits, as: UTF8.self))
    }

    static func segmentHeader(firstSeq: UInt64) -> [UInt8] {
        var bytes = segmentMagic
        bytes.appendLittleEndian(version)
        bytes.appendLittleEndian(UInt32(0))
        bytes.appendLittleEndian(firstSeq)
        bytes.appendLittleEndian(crc32c(bytes))
        bytes.appendLittleEndian(UInt32(0))
        return bytes
    }

    enum HeaderCheck: Equatable {
        case valid(firstSeq: UInt64)
        case invalid(String)
    }

    static func checkSegmentHeader(_ bytes: UnsafeRawBufferPointer) -> HeaderCheck {
        guard bytes.count >= segmentHeaderSize else { return .invalid("the file is shorter than a segment header") }
        guard bytes.prefix(8).elementsEqual(segmentMagic) else { return .invalid("it does not start with CORRALSG") }
        guard bytes.loadLittleEndian(UInt32.self, at: 24) == crc32c(UnsafeRawBufferPointer(rebasing: bytes[0..<24]))
        else {
            return .invalid("its header checksum does not match")
        }
        let version = bytes.loadLittleEndian(UInt32.self, at: 8)
        guard version == LogFormat.version else {
            return .invalid("it has format version \(version); this corral reads \(LogFormat.version)")
        }
        return .valid(firstSeq: bytes.loadLittleEndian(UInt64.self, at: 16))
    }

    // MARK: Records
    //
    //  0  u32 body length: bytes from offset 8 to the end of the data (32 + id + type + data)
    //  4  u32 CRC-32C of bytes 0..<4 followed by the body
    //  8  u64 seq
    // 16  u64 epoch of the lease that wrote it
    // 24  i64 time, nanoseconds since 1970-01-01T00:00:00Z
    // 32  u16 id length, u16 type length, u32 data length
    // 40  id, type, data (UTF-8; data is JSON text), then zeros up to a multiple of 8

    /// After the last record of the active segment: 8 bytes, a zero length and the checksum
    /// field `END!`. What follows it is runway: zeros written on purpose (see
    /// `FileSessionStore.Configuration.runwayBytes`). Zeros *not* announced by this marker
    /// are a zero-filled tail, and are cut off like any damaged tail.
    static let endMarker: [UInt8] = [0, 0, 0, 0] + Array("END!".utf8)

    static func isEndMarker(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= 8 && bytes.prefix(8).elementsEqual(endMarker)
    }

    static let recordPrefixSize = 8
    static let recordFixedSize = 40
    /// Largest body a reader will believe, whatever the writer's event limit was; anything
    /// larger is damage, not data.
    static let maxRecordBody = 1 << 30

    @inline(__always) static func aligned(_ size: Int) -> Int { (size + 7) & ~7 }

    static func recordSize(id: Int, type: Int, data: Int) -> Int { aligned(recordFixedSize + id + type + data) }

    static func appendRecord(
        to buffer: inout [UInt8], seq: UInt64, epoch: UInt64, time: Int64, id: [UInt8], type: [UInt8], data: [UInt8]
    ) {
        let start = buffer.count
        let body = recordFixedSize - recordPrefixSize + id.count + type.count + data.count
        buffer.appendLittleEndian(UInt32(body))
        buffer.appendLittleEndian(UInt32(0))  // checksum, filled in below
        buffer.appendLittleEndian(seq)
        buffer.appendLittleEndian(epoch)
        buffer.appendLittleEndian(UInt64(bitPattern: time))
        buffer.appendLittleEndian(UInt16(id.count))
        buffer.appendLittleEndian(UInt16(type.count))
        buffer.appendLittleEndian(UInt32(data.count))
        buffer.append(contentsOf: id)
        buffer.append(contentsOf: type)
        buffer.append(contentsOf: data)
        let padding = aligned(buffer.count - start) - (buffer.count - start)
        buffer.append(contentsOf: repeatElement(0, count: padding))
        let checksum = buffer.withUnsafeBytes { raw in
            crc32c(
                UnsafeRawBufferPointer(rebasing: raw[(start + 8)..<(start + 8 + body)]),
                continuing: crc32c(UnsafeRawBufferPointer(rebasing: raw[start..<(start + 4)])))
        }
        buffer.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: checksum.littleEndian, toByteOffset: start + 4, as: UInt32.self)
        }
    }

    /// A record's fixed fields, and where its variable parts sit relative to its first byte.
    struct RecordHeader: Equatable {
        var seq: UInt64
        var epoch: UInt64
        var time: Int64
        var idLength: Int
        var typeLength: Int
        var dataLength: Int
        /// Bytes the record occupies, padding included.
        var size: Int

        var idRange: Range<Int> { recordFixedSize..<(recordFixedSize + idLength) }
        var typeRange: Range<Int> { idRange.upperBound..<(idRange.upperBound + typeLength) }
        var dataRange: Range<Int> { typeRange.upperBound..<(typeRange.upperBound + dataLength) }
    }

    enum RecordCheck {
        case valid(RecordHeader)
        /// The bytes available end inside the record; `needed` is how many it claims.
        case incomplete(needed: Int)
        case invalid(String)
    }

    /// Checks the record at the start of `bytes`, checksum included.
    static func checkRecord(_ bytes: UnsafeRawBufferPointer) -> RecordCheck {
        guard bytes.count >= recordPrefixSize else { return .incomplete(needed: recordPrefixSize) }
        let body = Int(bytes.loadLittleEndian(UInt32.self, at: 0))
        if body == 0 && bytes.loadLittleEndian(UInt32.self, at: 4) == 0 {
            return .invalid("zero bytes where a record should start")
        }
        guard body >= recordFixedSize - recordPrefixSize, body <= maxRecordBody else {
            return .invalid("record length \(body) is impossible")
        }
        let end = recordPrefixSize + body
        guard bytes.count >= end else { return .incomplete(needed: end) }
        let expected = crc32c(
            UnsafeRawBufferPointer(rebasing: bytes[8..<end]),
            continuing: crc32c(UnsafeRawBufferPointer(rebasing: bytes[0..<4])))
        guard bytes.loadLittleEndian(UInt32.self, at: 4) == expected else {
            return .invalid("record checksum does not match")
        }
        let header = RecordHeader(
            seq: bytes.loadLittleEndian(UInt64.self, at: 8),
            epoch: bytes.loadLittleEndian(UInt64.self, at: 16),
            time: Int64(bitPattern: bytes.loadLittleEndian(UInt64.self, at: 24)),
            idLength: Int(bytes.loadLittleEndian(UInt16.self, at: 32)),
            typeLength: Int(bytes.loadLittleEndian(UInt16.self, at: 34)),
            dataLength: Int(bytes.loadLittleEndian(UInt32.self, at: 36)),
            size: aligned(end))
        guard recordFixedSize + header.idLength + header.typeLength + header.dataLength == end else {
            return .invalid("record field lengths do not add up to its length")
        }
        return .valid(header)
    }

    /// A cheap first look used when searching damaged bytes for later records: the length
    /// fits and the seq is in the range a following record could have.
    static func plausibleRecordStart(_ bytes: UnsafeRawBufferPointer, seqRange: ClosedRange<UInt64>) -> Bool {
        guard bytes.count >= recordFixedSize else { return false }
        let body = Int(bytes.loadLittleEndian(UInt32.self, at: 0))
        guard body >= recordFixedSize - recordPrefixSize, body <= maxRecordBody else { return false }
        return seqRange.contains(bytes.loadLittleEndian(UInt64.self, at: 8))
    }

    // MARK: Index files
    //
    // A 16-byte header (`CORRALIX`, u32 version, u32 zero), then 16-byte entries: u64 seq,
    // u64 byte offset of that record in the segment. An entry is made for the first record of
    // a segment, then for the first record at least `indexEverySeqs` seqs or `indexEveryBytes`
    // bytes past the previous entry. The rule depends only on the segment's contents, so
    // every process computes the same entries, and a rebuilt index equals the one it replaces.

    static let indexMagic: [UInt8] = Array("CORRALIX".utf8)
    static let indexHeaderSize = 16
    static let indexEntrySize = 16
    static let indexEverySeqs: UInt64 = 64
    static let indexEveryBytes: UInt64 = 64 * 1024

    static func indexHeader() -> [UInt8] {
        var bytes = indexMagic
        bytes.appendLittleEndian(version)
        bytes.appendLittleEndian(UInt32(0))
        return bytes
    }

    static func needsIndexEntry(seq: UInt64, offset: UInt64, after last: IndexEntry?) -> Bool {
        guard let last else { return true }
        return seq - last.seq >= indexEverySeqs || offset - last.offset >= indexEveryBytes
    }
}

struct IndexEntry: Equatable, Sendable {
    var seq: UInt64
    var offset: UInt64
}

extension Array where Element == UInt8 {
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}

extension UnsafeRawBufferPointer {
    @inline(__always)
    func loadLittleEndian<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
