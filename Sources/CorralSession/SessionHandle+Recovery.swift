import CorralCore
import Foundation

/// Bringing a handle's view of the log up to the files: at open, before each append, and
/// whenever a reader wants to see what other processes appended.
extension SessionHandle {
    /// Runs under the writer lock and the flock.
    func recoverAtOpen(_ writer: inout WriterState) throws {
        let lease = try LeaseRecord.read(paths, id: id)
        if try lock.epoch() < lease.epoch {
            try lock.setEpoch(lease.epoch)
        }
        removeStaleTemporaries()

        var segments = try FileIO.list(paths.directory).compactMap(LogFormat.segmentFirstSeq(fromName:)).sorted()
        var activeFile: OpenFile?
        // A segment whose creation was cut short has no valid header. If nothing intact
        // follows, it held nothing: set it aside and let the one before it be the last.
        while let last = segments.last {
            let file = try OpenFile(path: paths.segment(last), flags: O_RDWR)
            let header = try FileIO.pread(file.fd, count: LogFormat.segmentHeaderSize, at: 0, path: file.path)
            let check = header.withUnsafeBytes { LogFormat.checkSegmentHeader($0) }
            if check == .valid(firstSeq: last) {
                activeFile = file
                break
            }
            let reason: String
            switch check {
            case .invalid(let why): reason = why
            case .valid(let first): reason = "its header says it starts at seq \(first)"
            }
            let size = try file.size()
            if let intact = try DamageSearch.intactRecord(
                in: file, after: UInt64(LogFormat.segmentHeaderSize - 8), end: size, seqs: last...(last + size / 40 + 1)
            ) {
                throw CorralError(
                    .corrupted,
                    "session \(id): \(file.path) has a damaged header (\(reason)) but holds an intact record at byte \(intact)",
                    hint: "nothing was changed; copy \(paths.directory) aside before any repair")
            }
            try setAside(file, from: 0, removingFile: true)
            segments.removeLast()
        }

        guard let active = activeFile, let first = segments.last else {
            view.withLock { view in
                view.segments = []
                view.active = nil
                view.activeEnd = 0
                view.activeIndex = []
                view.head = 0
            }
            writer.indexFile = nil
            try lock.setEnd(0, 0)
            return
        }

        // Start the scan at the last index entry that still points at the record it names;
        // everything before it was scanned when it was written.
        let size = try active.size()
        var entries = loadIndexFile(first, segmentSize: size) ?? []
        var start = IndexEntry(seq: first, offset: UInt64(LogFormat.segmentHeaderSize))
        var tries = 0
        while let candidate = entries.last, tries < 4 {
            entries.removeLast()
            tries += 1
            if try recordMatches(candidate, in: active, end: size) {
                start = candidate
                break
            }
        }
        if start.offset == UInt64(LogFormat.segmentHeaderSize) { entries = [] }
        let kept = entries
        view.withLock { view in
            view.segments = segments
            view.active = active
            view.activeEnd = start.offset
            view.activeIndex = kept
            view.head = start.seq - 1
        }
        try openIndexFile(first, keeping: kept.count, writer: &writer)
        do {
            try catchUp(&writer)
        } catch let error as CorralError where error.code == .io || error.code == .permissionDenied {
            // The torn tail could not be set aside (a full disk, say). The log up to it is
            // readable; an end no writer can match sends the next append to try again, and
            // to report the error if it fails again.
            try lock.setEnd(UInt64.max, UInt64.max)
        }
    }

    /// Under the writer lock and the flock: takes in what other processes appended, cuts a
    /// torn tail, and keeps the active segment's index file in step.
    func catchUp(_ writer: inout WriterState) throws {
        writer.activeSize = nil
        try advance(recover: true)
        let (first, end) = view.withLock { ($0.segments.last, $0.activeEnd) }
        if let first, writer.indexFile == nil || writer.indexFileFirst != first {
            try openIndexFile(first, keeping: 0, writer: &writer)
        }
        persistIndex(&writer)
        try lock.setEnd(first ?? 0, end)
    }

    func recordMatches(_ entry: IndexEntry, in file: OpenFile, end: UInt64) throws -> Bool {
        guard entry.offset < end else { return false }
        var scanner = RecordScanner(file: file, from: entry.offset, end: end)
        if case .record(let header, _) = try scanner.next() { return header.seq == entry.seq }
        return false
    }

    /// Brings the view up to the end of the files. Without `recover` (any reader, no lock) it
    /// stops at the first record that is not whole: another process may be writing it, and
    /// it looks only when the lock file's end differs from its own. With `recover` (writer
    /// lock and flock held), nobody is writing: a bad tail is set aside if nothing intact
    /// follows it, and refused as corruption if something does.
    func advance(recover: Bool) throws {
        while true {
            let (active, first, end, head, lastEntry) = view.withLock { view in
                (view.active, view.segments.last, view.activeEnd, view.head, view.activeIndex.last)
            }
            // Every writer moves the lock file's end before it writes: if it still says what
            // this handle knows, there is nothing new to read.
            if !recover, try lock.end() == (first ?? 0, end) { return }
            guard let active, let first else {
                if try adoptSegment(first: head + 1, after: nil, recover: recover) { continue }
                return
            }
            let size = try active.size()
            if size < end {
                guard recover else { return }
                throw CorralError(
                    .corrupted,
                    "session \(id): \(active.path) is \(size) bytes, shorter than the \(end) bytes of records already read",
                    hint: "something outside corral truncated it; copy \(paths.directory) aside before any repair")
            }
            var scanner = RecordScanner(file: active, from: end, end: size)
            var expected = head + 1
            var added: [IndexEntry] = []
            var last = lastEntry
            enum Stop { case endOfFile, marker(UInt64), damage(String, UInt64, wrongSeq: Bool) }
            var stop = Stop.endOfFile
            scan: while true {
                switch try scanner.next() {
                case .record(let header, let at):
                    guard header.seq == expected else {
                        stop = .damage("holds seq \(header.seq)", at, wrongSeq: true)
                        break scan
                    }
                    if LogFormat.needsIndexEntry(seq: header.seq, offset: at, after: last) {
                        let entry = IndexEntry(seq: header.seq, offset: at)
                        added.append(entry)
                        last = entry
                    }
                    expected += 1
                case .end:
                    break scan
                case .endMarker(let at):
                    stop = .marker(at)
                    break scan
                case .bad(let reason, let at):
                    stop = .damage(reason, at, wrongSeq: false)
                    break scan
                }
            }
            let newEnd: UInt64
            switch stop {
            case .endOfFile: newEnd = scanner.offset
            case .marker(let at), .damage(_, let at, _): newEnd = at
            }
            let newHead = expected - 1
            if newEnd > end {
                let (published, ready) = view.withLock { view -> (Bool, [HeadWaiter]) in
                    guard view.active === active, view.activeEnd == end, view.head == head else { return (false, []) }
                    view.activeEnd = newEnd
                    view.head = newHead
                    view.activeIndex.append(contentsOf: added)
                    return (true, view.takeWaiters())
                }
                for waiter in ready { waiter.finish(.success(newHead)) }
                if !published { continue }
            }
            if recover {
                switch stop {
                case .endOfFile:
                    break
                case .marker(let at):
                    // Only zeros may follow the marker; anything else is damage at the marker.
                    if try !DamageSearch.allZero(in: active, from: at + 8, to: size) {
                        try cutOrRefuse(
                            active, at: at, size: size, expectedSeq: newHead + 1, reason: "bytes follow the end marker")
                        return
                    }
                case .damage(let reason, let at, let wrongSeq):
                    if wrongSeq { throw corrupted(reason, file: active.path, offset: at, expectedSeq: newHead + 1) }
                    try cutOrRefuse(active, at: at, size: size, expectedSeq: newHead + 1, reason: reason)
                    return
                }
            }
            // At the end of a full segment, another process may have started the next one.
            if newEnd >= manifest.segmentBytes, newHead >= first,
                try adoptSegment(first: newHead + 1, after: first, recover: recover)
            {
                continue
            }
            return
        }
    }

    /// Makes the segment starting at `first` the active one, when it exists and is whole.
    private func adoptSegment(first: UInt64, after previous: UInt64?, recover: Bool) throws -> Bool {
        let path = paths.segment(first)
        guard FileIO.exists(path) else { return false }
        let file: OpenFile
        do {
            file = try OpenFile(path: path, flags: O_RDWR)
        } catch let error as CorralError where error.code == .io && !FileIO.exists(path) {
            return false
        }
        let header = try FileIO.pread(file.fd, count: LogFormat.segmentHeaderSize, at: 0, path: path)
        guard header.withUnsafeBytes({ LogFormat.checkSegmentHeader($0) }) == .valid(firstSeq: first) else {
            // Another process may be creating it right now; only a writer may judge it.
            guard recover else { return false }
            let size = try file.size()
            if let intact = try DamageSearch.intactRecord(
                in: file, after: UInt64(LogFormat.segmentHeaderSize - 8), end: size,
                seqs: first...(first + size / 40 + 1))
            {
                throw CorralError(
                    .corrupted,
                    "session \(id): \(path) has a damaged header but holds an intact record at byte \(intact)",
                    hint: "nothing was changed; copy \(paths.directory) aside before any repair")
            }
            try setAside(file, from: 0, removingFile: true)
            return false
        }
        return activate(file, first: first) { $0.segments.last == previous && $0.head == first - 1 }
    }

    /// Makes `file`, the segment that starts at `first`, the active one, if `condition`
    /// holds for the view; the old active segment, with its index, joins the sealed ones.
    @discardableResult
    func activate(_ file: OpenFile, first: UInt64, when condition: (LogView) -> Bool = { _ in true }) -> Bool {
        let outcome: (activated: Bool, retired: (UInt64, SealedSegment)?) = view.withLock { view in
            guard condition(view) else { return (false, nil) }
            var retired: (UInt64, SealedSegment)?
            if let old = view.active, let oldFirst = view.segments.last {
                retired = (oldFirst, SealedSegment(file: old, size: view.activeEnd, index: view.activeIndex))
            }
            view.segments.append(first)
            view.active = file
            view.activeEnd = UInt64(LogFormat.segmentHeaderSize)
            view.activeIndex = []
            return (true, retired)
        }
        if let (oldFirst, segment) = outcome.retired { sealed.withLock { $0.insert(oldFirst, segment) } }
        return outcome.activated
    }

    private func cutOrRefuse(_ file: OpenFile, at offset: UInt64, size: UInt64, expectedSeq: UInt64, reason: String)
        throws
    {
        let span = (size - offset) / UInt64(LogFormat.recordFixedSize) + 1
        if let intact = try DamageSearch.intactRecord(
            in: file, after: offset, end: size, seqs: expectedSeq...(expectedSeq + span))
        {
            throw corrupted(
                "is damaged (\(reason)) but an intact record follows at byte \(intact); refusing to open the session",
                file: file.path, offset: offset, expectedSeq: expectedSeq)
        }
        try setAside(file, from: offset, removingFile: false)
    }

    /// Copies the bytes of `file` from `offset` to its end into `<file>.<offset>.broken`,
    /// durably, then cuts them off (or removes the file). Nothing is thrown away unseen.
    func setAside(_ file: OpenFile, from offset: UInt64, removingFile: Bool) throws {
        let size = try file.size()
        if size > offset {
            var suffix = 0
            var brokenPath = "\(file.path).\(offset).broken"
            var fd: Int32 = -1
            while fd < 0 {
                fd = Glibc.open(brokenPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                if fd < 0 {
                    guard errno == EEXIST else { throw FileIO.error("create", brokenPath) }
                    suffix += 1
                    brokenPath = "\(file.path).\(offset).\(suffix).broken"
                }
            }
            defer { close(fd) }
            var position = offset
            while position < size {
                let chunk = try FileIO.pread(
                    file.fd, count: Int(min(1 << 20, size - position)), at: position, path: file.path)
                guard !chunk.isEmpty else { break }
                try FileIO.pwrite(fd, chunk, at: position - offset, path: brokenPath)
                position += UInt64(chunk.count)
            }
            try FileIO.syncAll(fd, path: brokenPath)
        }
        if removingFile {
            unlink(file.path)
            if let first = LogFormat.segmentFirstSeq(fromName: (file.path as NSString).lastPathComponent) {
                unlink(paths.index(first))
            }
        } else {
            try FileIO.truncate(file.fd, to: offset, path: file.path)
            try FileIO.syncData(file.fd, path: file.path)
        }
        try FileIO.syncDirectory(paths.directory)
    }

    /// The entries of an index file that can be believed: a valid header, then entries
    /// that rise strictly and point inside the segment. Nil when missing or unusable.
    func loadIndexFile(_ first: UInt64, segmentSize: UInt64) -> [IndexEntry]? {
        let path = paths.index(first)
        guard let bytes = try? FileIO.readWholeFile(path, limit: 256 << 20),
            bytes.count >= LogFormat.indexHeaderSize, Array(bytes.prefix(8)) == LogFormat.indexMagic
        else { return nil }
        let count = (bytes.count - LogFormat.indexHeaderSize) / LogFormat.indexEntrySize
        var entries: [IndexEntry] = []
        entries.reserveCapacity(count)
        bytes.withUnsafeBytes { raw in
            guard raw.loadLittleEndian(UInt32.self, at: 8) == LogFormat.version else { return }
            for slot in 0..<count {
                let at = LogFormat.indexHeaderSize + slot * LogFormat.indexEntrySize
                let entry = IndexEntry(
                    seq: raw.loadLittleEndian(UInt64.self, at: at),
                    offset: raw.loadLittleEndian(UInt64.self, at: at + 8))
                if let previous = entries.last {
                    guard entry.seq > previous.seq, entry.offset > previous.offset, entry.offset < segmentSize else {
                        break
                    }
                } else {
                    guard entry == IndexEntry(seq: first, offset: UInt64(LogFormat.segmentHeaderSize)),
                        entry.offset < segmentSize
                    else { break }
                }
                entries.append(entry)
            }
        }
        return entries
    }

    /// Opens the active segment's index file, keeping its first `keeping` entries.
    func openIndexFile(_ first: UInt64, keeping: Int, writer: inout WriterState) throws {
        let path = paths.index(first)
        let file = try OpenFile(path: path, flags: O_RDWR | O_CREAT)
        let keptSize = UInt64(LogFormat.indexHeaderSize + keeping * LogFormat.indexEntrySize)
        if keeping == 0 || (try? file.size()) ?? 0 < keptSize {
            try? FileIO.truncate(file.fd, to: 0, path: path)
            try? FileIO.pwrite(file.fd, LogFormat.indexHeader(), at: 0, path: path)
            writer.persistedEntries = 0
        } else {
            writer.persistedEntries = keeping
        }
        try? FileIO.truncate(
            file.fd, to: UInt64(LogFormat.indexHeaderSize + writer.persistedEntries * LogFormat.indexEntrySize),
            path: path)
        writer.indexFile = file
        writer.indexFileFirst = first
    }

    /// Writes the active segment's index entries the file does not have yet. The index is a
    /// hint (every use of an entry is checked against the record it names), so a failure here
    /// costs speed, not correctness, and is not reported.
    func persistIndex(_ writer: inout WriterState) {
        guard let file = writer.indexFile else { return }
        let (pending, first) = view.withLock { view -> ([IndexEntry], UInt64?) in
            guard view.segments.last == writer.indexFileFirst, view.activeIndex.count > writer.persistedEntries else {
                return ([], nil)
            }
            return (Array(view.activeIndex[writer.persistedEntries...]), view.segments.last)
        }
        guard first != nil, !pending.isEmpty else { return }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(pending.count * LogFormat.indexEntrySize)
        for entry in pending {
            bytes.appendLittleEndian(entry.seq)
            bytes.appendLittleEndian(entry.offset)
        }
        let at = UInt64(LogFormat.indexHeaderSize + writer.persistedEntries * LogFormat.indexEntrySize)
        if (try? FileIO.pwrite(file.fd, bytes, at: at, path: file.path)) != nil {
            writer.persistedEntries += pending.count
        }
    }

    /// Temporary files left by a process that died mid-write. Lease temporaries are only
    /// written under the flock, which this process holds, so any left are stale; index
    /// rebuilds run without it, so only old ones are removed.
    private func removeStaleTemporaries() {
        let now = time(nil)
        for name in (try? FileIO.list(paths.directory)) ?? [] where name.hasSuffix(".tmp") {
            let path = paths.directory + "/" + name
            if name.hasPrefix("lease.") || name.hasPrefix("session.json.") {
                unlink(path)
                continue
            }
            var info = stat()
            if stat(path, &info) == 0, now - info.st_mtim.tv_sec > 600 { unlink(path) }
        }
    }
}

extension SessionHandle.LogView {
    /// Removes and returns the waiters the current head satisfies.
    mutating func takeWaiters() -> [SessionHandle.HeadWaiter] {
        guard !waiters.isEmpty else { return [] }
        let ready = waiters.values.filter { $0.beyond < head }
        for waiter in ready { waiters[ObjectIdentifier(waiter)] = nil }
        return ready
    }
}
