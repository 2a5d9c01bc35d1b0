/// Walks the records of one segment file from a given offset, reading in large chunks.
/// Every record it returns has passed its checksum.
struct RecordScanner {
    let file: OpenFile
    /// Stop here: the file's size, or the end of the records a reader may see.
    let end: UInt64
    private(set) var offset: UInt64
    private var buffer: [UInt8] = []
    private var bufferStart: UInt64 = 0
    private var bufferCount = 0

    static let chunkSize = 128 * 1024

    enum Step {
        case record(LogFormat.RecordHeader, at: UInt64)
        case end
        /// The end-of-log marker, at `at`; runway follows it.
        case endMarker(at: UInt64)
        /// The bytes at `at` are not a whole, valid record.
        case bad(reason: String, at: UInt64)
    }

    init(file: OpenFile, from offset: UInt64, end: UInt64) {
        self.file = file
        self.offset = offset
        self.end = end
    }

    mutating func next() throws -> Step {
        guard offset < end else { return .end }
        var needed = LogFormat.recordPrefixSize
        while true {
            if offset < bufferStart || offset + UInt64(needed) > bufferStart + UInt64(bufferCount) {
                guard offset + UInt64(needed) <= end else {
                    return .bad(reason: "the file ends inside a record", at: offset)
                }
                try fill(from: offset, atLeast: needed)
                guard offset + UInt64(needed) <= bufferStart + UInt64(bufferCount) else {
                    return .bad(reason: "the file ends inside a record", at: offset)
                }
            }
            let local = Int(offset - bufferStart)
            if buffer.withUnsafeBytes({
                LogFormat.isEndMarker(UnsafeRawBufferPointer(rebasing: $0[local..<bufferCount]))
            }) {
                return .endMarker(at: offset)
            }
            let check = buffer.withUnsafeBytes { raw in
                LogFormat.checkRecord(UnsafeRawBufferPointer(rebasing: raw[local..<bufferCount]))
            }
            switch check {
            case .valid(let header):
                guard offset + UInt64(header.size) <= end else {
                    return .bad(reason: "the file ends inside a record", at: offset)
                }
                let at = offset
                offset += UInt64(header.size)
                return .record(header, at: at)
            case .incomplete(let count):
                guard offset + UInt64(count) <= end else {
                    return .bad(reason: "the file ends inside a record", at: offset)
                }
                needed = count
            case .invalid(let reason):
                return .bad(reason: reason, at: offset)
            }
        }
    }

    /// The bytes of the record `next()` just returned, starting at its first byte.
    func withRecord<R>(at recordOffset: UInt64, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        let local = Int(recordOffset - bufferStart)
        return try buffer.withUnsafeBytes { raw in try body(UnsafeRawBufferPointer(rebasing: raw[local..<bufferCount]))
        }
    }

    private mutating func fill(from start: UInt64, atLeast needed: Int) throws {
        // Small first reads: a reader checking the end of the log for news needs a few bytes,
        // a slice a few kilobytes; longer scans grow the reads.
        let chunk = min(Self.chunkSize, max(16 * 1024, bufferCount * 2))
        let want = Int(min(UInt64(max(chunk, needed)), end - start))
        if buffer.count < want { buffer = [UInt8](repeating: 0, count: want) }
        bufferCount = try buffer.withUnsafeMutableBytes { raw in
            try FileIO.pread(
                file.fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<want]), at: start, path: file.path)
        }
        bufferStart = start
    }
}

enum DamageSearch {
    /// True when every byte of `file` from `start` to `end` is zero: clean runway.
    static func allZero(in file: OpenFile, from start: UInt64, to end: UInt64) throws -> Bool {
        var position = start
        while position < end {
            let chunk = try FileIO.pread(
                file.fd, count: Int(min(1 << 20, end - position)), at: position, path: file.path)
            guard !chunk.isEmpty else { return true }
            if chunk.contains(where: { $0 != 0 }) { return false }
            position += UInt64(chunk.count)
        }
        return true
    }

    /// The offset of the first intact record that starts after `start` (on an 8-byte
    /// boundary, before `end`) with a seq in `seqs`; nil when there is none, which makes the
    /// bytes from `start` on a torn tail rather than damage in the middle of the log.
    static func intactRecord(in file: OpenFile, after start: UInt64, end: UInt64, seqs: ClosedRange<UInt64>) throws
        -> UInt64?
    {
        let window = 1 << 20
        var position = (start + 8) & ~7
        var buffer = [UInt8](repeating: 0, count: window + LogFormat.recordFixedSize)
        while position + UInt64(LogFormat.recordFixedSize) <= end {
            let count = Int(min(UInt64(buffer.count), end - position))
            let got = try buffer.withUnsafeMutableBytes { raw in
                try FileIO.pread(
                    file.fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<count]), at: position,
                    path: file.path)
            }
            guard got >= LogFormat.recordFixedSize else { return nil }
            var local = 0
            while local + LogFormat.recordFixedSize <= got && local < window {
                let candidate = buffer.withUnsafeBytes { raw in
                    LogFormat.plausibleRecordStart(UnsafeRawBufferPointer(rebasing: raw[local..<got]), seqRange: seqs)
                }
                if candidate {
                    let at = position + UInt64(local)
                    var scanner = RecordScanner(file: file, from: at, end: end)
                    if case .record(let header, _) = try scanner.next(), seqs.contains(header.seq) { return at }
                }
                local += 8
            }
            position += UInt64(local)
        }
        return nil
    }
}
