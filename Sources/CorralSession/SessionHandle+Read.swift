import CorralCore
import Foundation

extension SessionHandle {
    /// Where to start scanning for a seq: a segment, the records a reader may see in it,
    /// and an index entry at or before the seq.
    private struct Cursor {
        var first: UInt64
        var file: OpenFile
        var end: UInt64
        /// Last seq held by this segment, as far as this read is concerned.
        var lastSeq: UInt64
        var entry: IndexEntry
        /// Position of `entry` in the segment's index; -1 for the segment's first record.
        var slot: Int
        var isActive: Bool
    }

    func readPage(from: UInt64, limit: Int, maxBytes: Int) throws -> EventPage {
        try advance(recover: false)
        let head = self.head
        let start = max(from, 1)
        guard start <= head, limit > 0 else { return EventPage(events: [], next: start, head: head) }
        let last = head - start + 1 <= UInt64(limit) ? head : start + UInt64(limit) - 1
        var events: [Event] = []
        events.reserveCapacity(Int(last - start + 1))
        var bytes = 0
        try visitRecords(from: start, through: last) { header, record in
            events.append(try decodeEvent(header, record))
            bytes += header.size
            return bytes < maxBytes
        }
        return EventPage(events: events, next: (events.last?.seq ?? start - 1) + 1, head: head)
    }

    private func decodeEvent(_ header: LogFormat.RecordHeader, _ record: UnsafeRawBufferPointer) throws -> Event {
        let id = String(decoding: UnsafeRawBufferPointer(rebasing: record[header.idRange]), as: UTF8.self)
        let type = String(decoding: UnsafeRawBufferPointer(rebasing: record[header.typeRange]), as: UTF8.self)
        let data: JSONValue
        do {
            data = try JSONCodec.decode(
                UnsafeRawBufferPointer(rebasing: record[header.dataRange]).assumingMemoryBound(to: UInt8.self))
        } catch {
            throw CorralError(
                .corrupted,
                "session \(id): event \(header.seq) passed its checksum but its data is not JSON (\(error.description))",
                hint: "it was written that way; copy \(paths.directory) aside and report it")
        }
        return Event(
            seq: header.seq, id: EventID(unchecked: id), type: type, time: Timestamp.date(nanoseconds: header.time),
            epoch: header.epoch, data: data)
    }

    /// Calls `visit` with each record from `from` through `last` (both at most the head), in
    /// order, until it returns false. Every record is checked: checksum, and a seq one past
    /// the one before.
    func visitRecords(
        from: UInt64, through last: UInt64, _ visit: (LogFormat.RecordHeader, UnsafeRawBufferPointer) throws -> Bool
    ) throws {
        var seq = from
        while seq <= last {
            var cursor = try locate(seq)
            let stop = min(last, cursor.lastSeq)
            scanning: while true {
                var scanner = RecordScanner(file: cursor.file, from: cursor.entry.offset, end: cursor.end)
                var expected = cursor.entry.seq
                var problem: (what: String, at: UInt64)?
                records: while true {
                    switch try scanner.next() {
                    case .record(let header, let at):
                        guard header.seq == expected else {
                            problem = ("holds seq \(header.seq)", at)
                            break records
                        }
                        if header.seq >= seq {
                            let more = try scanner.withRecord(at: at) { try visit(header, $0) }
                            seq = header.seq + 1
                            if !more { return }
                        }
                        expected += 1
                        if header.seq >= stop { break scanning }
                    case .end:
                        problem = ("is missing: the segment ends before it", scanner.offset)
                        break records
                    case .endMarker(let at):
                        problem = ("is missing: the log's end marker comes first", at)
                        break records
                    case .bad(let reason, let at):
                        problem = ("is damaged: \(reason)", at)
                        break records
                    }
                }
                guard let problem else { break scanning }
                // An index entry that does not name the record it points at is a stale hint,
                // not damage: step back to the entry before it.
                if problem.at == cursor.entry.offset, cursor.slot >= 0 {
                    cursor = try stepBack(cursor)
                    continue scanning
                }
                throw corrupted(problem.what, file: cursor.file.path, offset: problem.at, expectedSeq: expected)
            }
            seq = max(seq, stop + 1)
        }
    }

    /// Where the record `seq` ends in its segment, and the index entries of that segment up
    /// to it: what a fork copies.
    func boundary(after seq: UInt64) throws -> (first: UInt64, end: UInt64, entries: [IndexEntry]) {
        var cursor = try locate(seq)
        while true {
            var scanner = RecordScanner(file: cursor.file, from: cursor.entry.offset, end: cursor.end)
            var expected = cursor.entry.seq
            while case .record(let header, _) = try scanner.next(), header.seq == expected {
                if header.seq == seq {
                    let entries: [IndexEntry] =
                        cursor.isActive
                        ? view.withLock { $0.segments.last == cursor.first ? $0.activeIndex : [] }
                        : try sealedSegment(cursor.first).1.index
                    return (cursor.first, scanner.offset, entries.filter { $0.seq <= seq })
                }
                expected += 1
            }
            guard cursor.slot >= 0 else {
                throw corrupted(
                    "cannot be found", file: cursor.file.path, offset: scanner.offset, expectedSeq: expected)
            }
            cursor = try stepBack(cursor)
        }
    }

    private func locate(_ seq: UInt64) throws -> Cursor {
        enum Where {
            case active(Cursor)
            case sealed(first: UInt64, lastSeq: UInt64)
            case missing(first: UInt64?)
        }
        let found: Where = view.withLock { view in
            guard let position = view.segments.lastIndex(where: { $0 <= seq }) else {
                return .missing(first: view.segments.first)
            }
            let first = view.segments[position]
            if position == view.segments.count - 1, let active = view.active {
                let (entry, slot) = Self.lookup(view.activeIndex, seq, first: first)
                return .active(
                    Cursor(
                        first: first, file: active, end: view.activeEnd, lastSeq: view.head, entry: entry, slot: slot,
                        isActive: true))
            }
            return .sealed(first: first, lastSeq: view.segments[position + 1] - 1)
        }
        switch found {
        case .active(let cursor):
            return cursor
        case .sealed(let first, let lastSeq):
            let (file, segment) = try sealedSegment(first)
            let (entry, slot) = Self.lookup(segment.index, seq, first: first)
            return Cursor(
                first: first, file: file, end: segment.size, lastSeq: lastSeq, entry: entry, slot: slot, isActive: false
            )
        case .missing(let first):
            throw CorralError(
                .corrupted,
                "session \(id): no segment holds seq \(seq)\(first.map { "; the first one starts at seq \($0)" } ?? "")",
                hint: "a segment file is missing from \(paths.directory); restore it from a backup")
        }
    }

    private func stepBack(_ cursor: Cursor) throws -> Cursor {
        var next = cursor
        next.slot -= 1
        if next.slot < 0 {
            next.entry = IndexEntry(seq: cursor.first, offset: UInt64(LogFormat.segmentHeaderSize))
            return next
        }
        let entry: IndexEntry? =
            cursor.isActive
            ? view.withLock {
                $0.segments.last == cursor.first && next.slot < $0.activeIndex.count ? $0.activeIndex[next.slot] : nil
            }
            : try sealedSegment(cursor.first).1.index[safe: next.slot]
        next.entry = entry ?? IndexEntry(seq: cursor.first, offset: UInt64(LogFormat.segmentHeaderSize))
        if entry == nil { next.slot = -1 }
        return next
    }

    /// The last entry at or before `seq`, by binary search.
    static func lookup(_ entries: [IndexEntry], _ seq: UInt64, first: UInt64) -> (IndexEntry, Int) {
        var low = 0
        var high = entries.count
        while low < high {
            let middle = (low + high) / 2
            if entries[middle].seq <= seq { low = middle + 1 } else { high = middle }
        }
        guard low > 0 else { return (IndexEntry(seq: first, offset: UInt64(LogFormat.segmentHeaderSize)), -1) }
        return (entries[low - 1], low - 1)
    }

    /// A sealed segment, opened and indexed once and then cached. A missing or unusable
    /// index file is rebuilt by scanning the segment.
    private func sealedSegment(_ first: UInt64) throws -> (OpenFile, SealedSegment) {
        let cached = sealed.withLock { cache -> SealedSegment? in
            guard let segment = cache.segments[first] else { return nil }
            cache.touch(first)
            return segment
        }
        if let cached, let file = cached.file { return (file, cached) }
        let path = paths.segment(first)
        let file = try OpenFile(path: path, flags: O_RDONLY)
        let size = try cached?.size ?? file.size()
        let header = try FileIO.pread(file.fd, count: LogFormat.segmentHeaderSize, at: 0, path: path)
        let check = header.withUnsafeBytes { LogFormat.checkSegmentHeader($0) }
        guard check == .valid(firstSeq: first) else {
            let reason: String
            switch check {
            case .invalid(let why): reason = why
            case .valid(let other): reason = "its header says it starts at seq \(other)"
            }
            throw CorralError(
                .corrupted, "session \(id): segment \(path) is damaged: \(reason)",
                hint: "events before seq \(first) can still be read; copy \(paths.directory) aside before any repair")
        }
        let index =
            try cached?.index ?? loadIndexFile(first, segmentSize: size) ?? rebuildIndex(file, first: first, size: size)
        let segment = SealedSegment(file: file, size: size, index: index)
        sealed.withLock { $0.insert(first, segment) }
        return (file, segment)
    }

    /// Scans a whole sealed segment to make its index again, and writes it (atomically,
    /// best effort: the index is only a hint).
    private func rebuildIndex(_ file: OpenFile, first: UInt64, size: UInt64) throws -> [IndexEntry] {
        var scanner = RecordScanner(file: file, from: UInt64(LogFormat.segmentHeaderSize), end: size)
        var entries: [IndexEntry] = []
        var expected = first
        loop: while true {
            switch try scanner.next() {
            case .record(let header, let at):
                guard header.seq == expected else {
                    throw corrupted("holds seq \(header.seq)", file: file.path, offset: at, expectedSeq: expected)
                }
                if LogFormat.needsIndexEntry(seq: header.seq, offset: at, after: entries.last) {
                    entries.append(IndexEntry(seq: header.seq, offset: at))
                }
                expected += 1
            case .end, .endMarker:
                break loop
            case .bad(let reason, let at):
                throw corrupted("is damaged: \(reason)", file: file.path, offset: at, expectedSeq: expected)
            }
        }
        var bytes = LogFormat.indexHeader()
        for entry in entries {
            bytes.appendLittleEndian(entry.seq)
            bytes.appendLittleEndian(entry.offset)
        }
        let path = paths.index(first)
        let temporary = "\(path).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        if let fd = try? FileIO.open(temporary, O_WRONLY | O_CREAT | O_EXCL) {
            let written = (try? FileIO.pwrite(fd, bytes, at: 0, path: temporary)) != nil
            close(fd)
            if !written || Glibc.rename(temporary, path) != 0 { unlink(temporary) }
        }
        return entries
    }
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
