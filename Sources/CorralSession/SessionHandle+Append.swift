import CorralCore
import Foundation

extension SessionHandle {
    typealias EncodedEvent = NewEvent.Checked

    struct WriteOutcome: Sendable {
        var events: [AppendResult.Appended]
        var written: Int
        var head: UInt64
    }

    /// Checks every event against the limits, refusing the whole call at the first problem.
    func encode(_ events: [NewEvent]) throws -> [EncodedEvent] {
        var generator = SplitMix64(seed: idSeeds.withLock { $0.next() })
        return try NewEvent.check(
            events, session: id, maxEventBytes: limits.maxEventBytes, maxAppendBytes: limits.maxAppendBytes,
            recordSize: { LogFormat.recordSize(id: $0, type: $1, data: $2) }, ids: &generator)
    }

    /// The locked part of an append: lease check, catching up with the files, the retry and
    /// `expectedSeq` checks, then one write. Runs under the writer lock and the flock.
    /// `stamps` gives each event its own time and epoch (a copy from another store); without
    /// them every event gets now and the lease's epoch.
    func writeLocked(
        _ events: [EncodedEvent], expectedSeq: UInt64?, lease: Lease, durability: Durability, writer: inout WriterState,
        stamps: [(time: Int64, epoch: UInt64)]? = nil
    ) throws -> WriteOutcome {
        if let failure = writer.failure { throw failure }
        let current = try lock.epoch()
        guard lease.epoch == current else {
            if lease.epoch < current {
                throw CorralError(
                    .conflict,
                    "lease epoch \(lease.epoch) of session \(id) is stale: the session was woken at epoch \(current)",
                    hint:
                        "another harness took the session over with wake; stop writing to it, or wake it again to take it back"
                )
            }
            throw CorralError(
                .conflict,
                "lease epoch \(lease.epoch) of session \(id) was never given out: the current epoch is \(current)",
                hint: "get a lease from wake (or currentLease for a plain writer)")
        }
        // The lock file holds the log's end as the last writer left it: when it matches
        // this handle's, nobody else has written, and there is nothing to read first.
        let (knownFirst, knownEnd) = view.withLock { ($0.segments.last ?? 0, $0.activeEnd) }
        if try lock.end() != (knownFirst, knownEnd) { try catchUp(&writer) }
        let head = self.head
        let (skip, firstSeq) = try alreadyStored(events, expectedSeq: expectedSeq, head: head)
        let appended = events.enumerated().map {
            AppendResult.Appended(seq: firstSeq + UInt64($0.offset), id: $0.element.id)
        }
        guard skip < events.count else {
            return WriteOutcome(events: appended, written: 0, head: head)
        }
        try rollIfNeeded(&writer)
        let (active, activeFirst, end, lastEntry) = view.withLock {
            ($0.active, $0.segments.last, $0.activeEnd, $0.activeIndex.last)
        }
        guard let active, let activeFirst else {
            throw CorralError(.internalError, "session \(id) has no active segment after a roll")
        }
        let time = Timestamp.nowNanoseconds()
        var buffer: [UInt8] = []
        buffer.reserveCapacity(
            events[skip...].reduce(0) {
                $0 + LogFormat.recordSize(id: $1.id.rawValue.utf8.count, type: $1.type.count, data: $1.data.count)
            })
        var entries: [IndexEntry] = []
        var last = lastEntry
        var seq = head
        for (position, event) in events.enumerated().dropFirst(skip) {
            seq += 1
            let offset = end + UInt64(buffer.count)
            if LogFormat.needsIndexEntry(seq: seq, offset: offset, after: last) {
                let entry = IndexEntry(seq: seq, offset: offset)
                entries.append(entry)
                last = entry
            }
            let stamp = stamps?[position]
            LogFormat.appendRecord(
                to: &buffer, seq: seq, epoch: stamp?.epoch ?? lease.epoch, time: stamp?.time ?? time,
                id: Array(event.id.rawValue.utf8),
                type: event.type,
                data: event.data)
        }
        let recordBytes = UInt64(buffer.count)
        buffer.append(contentsOf: LogFormat.endMarker)
        if writer.indexFile == nil || writer.indexFileFirst != activeFirst {
            try openIndexFile(activeFirst, keeping: 0, writer: &writer)
        }
        let size: UInt64
        if let known = writer.activeSize, known.first == activeFirst {
            size = known.size
        } else {
            size = try active.size()
        }
        writer.activeSize = (activeFirst, size)
        // An fsync append that reaches the end of the file lays runway ahead of it; if the
        // disk has no room for that, the append goes ahead without.
        var runway = 0
        if case .fsync = durability, end + UInt64(buffer.count) > size, limits.runwayBytes > 0 {
            runway = Int(
                min(
                    UInt64(limits.runwayBytes),
                    manifest.segmentBytes &- min(manifest.segmentBytes, end + UInt64(buffer.count))))
        }
        while true {
            do {
                // Claim the bytes before writing them: a writer that dies mid-write leaves an
                // end no other writer matches, which sends the next one to look.
                try lock.setEnd(activeFirst, end + recordBytes)
                if runway > 0 {
                    try FileIO.pwrite(
                        active.fd, buffer + [UInt8](repeating: 0, count: runway), at: end, path: active.path)
                } else {
                    try FileIO.pwrite(active.fd, buffer, at: end, path: active.path)
                }
                writer.activeSize = (activeFirst, max(size, end + UInt64(buffer.count + runway)))
                break
            } catch let failure as CorralError {
                rollBack(
                    active, first: activeFirst, to: end, size: size, written: buffer.count + runway, writer: &writer)
                if runway > 0, writer.failure == nil, FileIO.isOutOfSpace(failure) {
                    runway = 0
                    continue
                }
                throw failure
            }
        }
        let newHead = seq
        let ready = view.withLock { view -> [HeadWaiter] in
            view.activeEnd = end + recordBytes
            view.head = newHead
            view.activeIndex.append(contentsOf: entries)
            return view.takeWaiters()
        }
        for waiter in ready { waiter.finish(.success(newHead)) }
        persistIndex(&writer)
        return WriteOutcome(events: appended, written: events.count - skip, head: newHead)
    }

    /// Takes back whatever part of a failed write landed, so that a refused append leaves
    /// nothing: the file's old size, the end marker and zeros where they were.
    private func rollBack(
        _ file: OpenFile, first: UInt64, to end: UInt64, size: UInt64, written: Int, writer: inout WriterState
    ) {
        do {
            if end + UInt64(written) > size { try FileIO.truncate(file.fd, to: max(size, end), path: file.path) }
            if size >= end + 8 {
                let restored = Int(min(UInt64(written), size - end))
                try FileIO.pwrite(
                    file.fd, LogFormat.endMarker + [UInt8](repeating: 0, count: restored - 8), at: end, path: file.path)
            }
            writer.activeSize = (first, max(size, end))
            try lock.setEnd(first, end)
        } catch let error as CorralError {
            writer.failure = CorralError(
                .io, "session \(id): a failed append could not be rolled back (\(error.message))",
                hint: "reopen the store; recovery will sort the tail out")
        } catch {
            writer.failure = CorralError(.io, "session \(id): a failed append could not be rolled back: \(error)")
        }
    }

    /// How many of `events`, from the first, are already stored where this call would put
    /// them (a retry of an append that landed), and the seq of the first event. Throws when
    /// `expectedSeq` does not fit.
    private func alreadyStored(_ events: [EncodedEvent], expectedSeq: UInt64?, head: UInt64) throws -> (Int, UInt64) {
        if let expected = expectedSeq {
            if expected == head + 1 { return (0, expected) }
            if expected >= 1, expected <= head {
                let overlap = Int(min(UInt64(events.count), head - expected + 1))
                let stored = try storedIDs(from: expected, count: overlap)
                if zip(events, stored).allSatisfy({ $0.callerID && $0.id == $1 }) { return (overlap, expected) }
            }
            throw CorralError(
                .conflict,
                "session \(id): expected the first new event to get seq \(expected), but the head is \(head) (next seq \(head + 1))",
                hint:
                    "read the session from seq \(min(expected, head + 1)) and decide again; a retry with the same event ids at the same seqs would have succeeded"
            )
        }
        // No expectedSeq: still recognise a retry of the latest append by its ids.
        guard let firstID = events.first, firstID.callerID, head > 0 else { return (0, head + 1) }
        let window = Int(min(UInt64(events.count), head))
        let stored = try storedIDs(from: head - UInt64(window) + 1, count: window)
        guard let position = stored.firstIndex(of: firstID.id) else { return (0, head + 1) }
        let overlap = window - position
        guard zip(events.prefix(overlap), stored[position...]).allSatisfy({ $0.callerID && $0.id == $1 }) else {
            throw CorralError(
                .conflict,
                "session \(id): event id \(firstID.id) is already stored at seq \(head - UInt64(overlap) + 1) with different events after it",
                hint: "event ids must be unique within a session; pass expectedSeq to retry safely")
        }
        return (overlap, head + 1 - UInt64(overlap))
    }

    private func storedIDs(from seq: UInt64, count: Int) throws -> [EventID] {
        var ids: [EventID] = []
        ids.reserveCapacity(count)
        try visitRecords(from: seq, through: seq + UInt64(count) - 1) { header, bytes in
            ids.append(
                EventID(
                    unchecked: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[header.idRange]), as: UTF8.self))
            )
            return true
        }
        return ids
    }

    /// Starts a new segment when there is none or the active one is full. The old one is made
    /// durable first, so that a sealed segment never loses its tail in a machine crash.
    private func rollIfNeeded(_ writer: inout WriterState) throws {
        let (active, first, end, head) = view.withLock { ($0.active, $0.segments.last, $0.activeEnd, $0.head) }
        if let first, active != nil, end < manifest.segmentBytes || head < first { return }
        if let active {
            // Sealed segments end at their last record: no marker, no runway.
            try FileIO.truncate(active.fd, to: end, path: active.path)
            try FileIO.syncData(active.fd, path: active.path)
        }
        let newFirst = head + 1
        let path = paths.segment(newFirst)
        try lock.setEnd(newFirst, UInt64(LogFormat.segmentHeaderSize))
        let file = try OpenFile(path: path, flags: O_RDWR | O_CREAT | O_EXCL)
        do {
            try FileIO.pwrite(file.fd, LogFormat.segmentHeader(firstSeq: newFirst), at: 0, path: path)
            try FileIO.syncData(file.fd, path: path)
            try FileIO.syncDirectory(paths.directory)
        } catch {
            unlink(path)
            try? FileIO.syncDirectory(paths.directory)
            throw error
        }
        activate(file, first: newFirst)
        let indexPath = paths.index(newFirst)
        if let index = try? OpenFile(path: indexPath, flags: O_RDWR | O_CREAT | O_TRUNC) {
            try? FileIO.pwrite(index.fd, LogFormat.indexHeader(), at: 0, path: indexPath)
            writer.indexFile = index
        } else {
            writer.indexFile = nil
        }
        writer.indexFileFirst = newFirst
        writer.persistedEntries = 0
        writer.activeSize = (newFirst, UInt64(LogFormat.segmentHeaderSize))
    }

    /// Wake: the next epoch, under the writer lock and the flock, mirrored before the lease
    /// file is replaced so that no append can slip in under the old epoch.
    func wakeLocked(_ writer: inout WriterState) throws -> Lease {
        let mirrored = try lock.epoch()
        let recorded = try LeaseRecord.read(paths, id: id).epoch
        let next = max(mirrored, recorded) + 1
        try lock.setEpoch(next)
        try LeaseRecord.write(epoch: next, paths: paths, id: id)
        return Lease(session: id, epoch: next)
    }
}
