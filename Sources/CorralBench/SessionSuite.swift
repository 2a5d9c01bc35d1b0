import CSQLite
import CorralCore
import CorralSession
import CorralSessionPostgres
import Foundation
import Logging

/// The session store beside SQLite (WAL, one row per event) and a JSONL file, on the same
/// disk in the same run, plus a bare write+fdatasync loop that bounds what any fsync-per-
/// event log can reach there.
///
/// Durability levels are matched like this: corral `.fsync` against SQLite
/// `synchronous=FULL` (a transaction per event) and JSONL with an fdatasync per line;
/// corral `.groupCommit(2 ms)` against SQLite `synchronous=NORMAL` (WAL synced at
/// checkpoints) and JSONL synced every 2 ms; corral `.none` against SQLite
/// `synchronous=OFF` and JSONL without fdatasync.
struct SessionSuite: BenchSuite {
    static let name = "session"
    static let summary = "session store appends, slices, wake and memory, beside SQLite and JSONL"

    struct Sizes {
        var fsyncEvents: Int
        var fsyncEventsPerSession: Int
        var lazyEvents: Int
        var lazyEventsPerSession: Int
        var bigSessionEvents: Int
        var slices: Int
        var wakes: Int
    }

    static let groupDelay = Duration.milliseconds(2)

    func run(_ context: BenchContext) async throws -> SuiteReport {
        let sizes =
            context.quick
            ? Sizes(
                fsyncEvents: 300, fsyncEventsPerSession: 40, lazyEvents: 20_000, lazyEventsPerSession: 2_000,
                bigSessionEvents: 50_000, slices: 300, wakes: 10)
            : Sizes(
                fsyncEvents: 3_000, fsyncEventsPerSession: 300, lazyEvents: 200_000, lazyEventsPerSession: 20_000,
                bigSessionEvents: 1_000_000, slices: 2_000, wakes: 20)
        let root = context.scratch.appendingPathComponent("session", isDirectory: true)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        var report = SuiteReport(suite: Self.name)
        report.notes.append(
            "scratch \(root.path); \(context.quick ? "quick sizes" : "full sizes"); small events are about 200 bytes of JSON"
        )
        #if DEBUG
        report.notes.append(
            "built for debugging (-Onone): corral's CPU-bound figures are several times below a release build, the peers' C is optimised either way; measure with `swift run -c release corral-bench`"
        )
        #endif

        // Appends at the three durability levels, for 1 and 16 sessions. The bare loop's rate
        // is taken in rounds that alternate with corral's, so that both see the same disk:
        // here its fdatasync latency drifts by several times within minutes.
        let (bare, corralFsync) = try await Self.fsyncAgainstBareLoop(directory: root, count: sizes.fsyncEvents)
        var appendRates: [(String, Double, Double)] = []  // (metric, corral, best peer)
        for (level, durability) in [
            ("fsync per event", Durability.fsync), ("group commit 2 ms", .groupCommit(maxDelay: Self.groupDelay)),
            ("no fsync", .none),
        ] {
            for sessions in [1, 16] {
                let perSession: Int
                switch durability {
                case .fsync: perSession = sessions == 1 ? sizes.fsyncEvents : sizes.fsyncEventsPerSession
                default: perSession = sessions == 1 ? sizes.lazyEvents : sizes.lazyEventsPerSession
                }
                let directory = root.appendingPathComponent("append-\(appendRates.count)", isDirectory: true)
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                defer { try? FileManager.default.removeItem(at: directory) }
                // Each run starts with nothing left for the kernel to write back from the last.
                let corral: Double
                if case .fsync = durability, sessions == 1 {
                    corral = corralFsync
                } else {
                    sync()
                    corral = try await Self.corralAppends(
                        directory: directory, sessions: sessions, perSession: perSession, durability: durability)
                }
                sync()
                let sqlite = try Peers.sqliteAppends(
                    directory: directory, sessions: sessions, perSession: perSession, level: durability)
                sync()
                let jsonl = try Peers.jsonlAppends(
                    directory: directory, sessions: sessions, perSession: perSession, level: durability)
                var measurements = [
                    Measurement(subject: "corral", unit: "events/s", value: corral),
                    Measurement(subject: Peers.sqliteName(durability), unit: "events/s", value: sqlite),
                    Measurement(subject: Peers.jsonlName(durability), unit: "events/s", value: jsonl),
                ]
                var targets = [
                    TargetCheck(
                        target: "faster than SQLite",
                        observed: String(format: "%.0f vs %.0f events/s (%.2fx)", corral, sqlite, corral / sqlite),
                        met: corral > sqlite)
                ]
                if case .fsync = durability, sessions == 1 {
                    measurements.append(
                        Measurement(subject: "bare write+fdatasync loop", unit: "events/s", value: bare))
                    targets.append(
                        TargetCheck(
                            target: ">= 80% of a bare fdatasync loop",
                            observed: String(format: "%.0f%% (%.0f of %.0f/s)", 100 * corral / bare, corral, bare),
                            met: corral >= 0.8 * bare))
                }
                if case .groupCommit = durability {
                    targets.append(
                        TargetCheck(
                            target: ">= 100k events/s", observed: String(format: "%.0f events/s", corral),
                            met: corral >= 100_000))
                }
                let metric = "append, \(level), \(sessions) session\(sessions == 1 ? "" : "s")"
                report.comparisons.append(Comparison(metric: metric, measurements: measurements, targets: targets))
                appendRates.append((metric, corral, sqlite))
            }
        }

        // One big session: slices, wake and first read, and memory while reading it all.
        let big = root.appendingPathComponent("big", isDirectory: true)
        try FileManager.default.createDirectory(at: big, withIntermediateDirectories: true)
        let (store, id, built, bytes) = try await Self.buildBigSession(directory: big, events: sizes.bigSessionEvents)
        let label = sizes.bigSessionEvents >= 1_000_000 ? "1M" : "\(sizes.bigSessionEvents / 1000)k"
        report.notes.append(
            String(
                format: "big session: %d events, %.2f GB on disk, written with durability none in %.1f s",
                sizes.bigSessionEvents,
                Double(bytes) / 1e9, built))
        let sqliteBig = try Peers.SQLiteBigSession(directory: big, events: sizes.bigSessionEvents)
        // Measure in a quiet state: nothing left for the kernel to write back.
        sync()

        var generator = SystemRandomNumberGenerator()
        var corralSlices = Samples()
        var sqliteSlices = Samples()
        for _ in 0..<sizes.slices {
            let from = UInt64.random(in: 1...UInt64(sizes.bigSessionEvents - 99), using: &generator)
            let (page, milliseconds) = try await measureMilliseconds {
                try await store.readPage(id, from: from, limit: 100)
            }
            guard page.events.count == 100, page.events.first?.seq == from else {
                throw CorralError(.internalError, "slice from \(from) returned \(page.events.count) events")
            }
            corralSlices.append(milliseconds)
            sqliteSlices.append(try sqliteBig.slice(from: Int64(from), count: 100))
        }
        report.comparisons.append(
            Comparison(
                metric: "slice of 100 events from a \(label)-event session",
                measurements: [
                    Measurement(subject: "corral", unit: "ms", samples: corralSlices),
                    Measurement(subject: "sqlite (primary key range)", unit: "ms", samples: sqliteSlices),
                ],
                targets: [
                    TargetCheck(
                        target: "p99 < 1 ms", observed: String(format: "p99 %.3f ms", corralSlices.p99),
                        met: corralSlices.p99 < 1)
                ]))

        var wakes = Samples()
        var firstReads = Samples()
        var sqliteWakes = Samples()
        var sqliteFirstReads = Samples()
        for _ in 0..<sizes.wakes {
            // A new store knows nothing: wake opens and recovers the session from its files.
            let fresh = FileSessionStore(directory: store.directory)
            let (_, wake) = try await measureMilliseconds { try await fresh.wake(id) }
            let (_, first) = try await measureMilliseconds { try await fresh.readPage(id, from: 1, limit: 100) }
            wakes.append(wake)
            firstReads.append(first)
            let (sqliteWake, sqliteFirst) = try sqliteBig.wakeAndFirstRead()
            sqliteWakes.append(sqliteWake)
            sqliteFirstReads.append(sqliteFirst)
        }
        report.comparisons.append(
            Comparison(
                metric: "wake a \(label)-event session (new store, lease epoch + 1, durable)",
                measurements: [
                    Measurement(subject: "corral", unit: "ms", samples: wakes),
                    Measurement(subject: "sqlite (open, bump epoch, FULL)", unit: "ms", samples: sqliteWakes),
                ],
                targets: [
                    TargetCheck(
                        target: "< 50 ms", observed: String(format: "max %.2f ms", wakes.values.max() ?? .nan),
                        met: (wakes.values.max() ?? .infinity) < 50)
                ]))
        report.comparisons.append(
            Comparison(
                metric: "first read after wake (100 events from seq 1)",
                measurements: [
                    Measurement(subject: "corral", unit: "ms", samples: firstReads),
                    Measurement(subject: "sqlite", unit: "ms", samples: sqliteFirstReads),
                ]))

        let memory = try await Self.readAllMeasuringMemory(
            store: FileSessionStore(directory: store.directory), id: id, expected: sizes.bigSessionEvents)
        report.comparisons.append(
            Comparison(
                metric: String(format: "read all of a %.2f GB session", Double(bytes) / 1e9),
                measurements: [
                    Measurement(subject: "corral peak RSS growth while reading", unit: "MB", value: memory.growth),
                    Measurement(subject: "corral peak RSS of the whole bench process", unit: "MB", value: memory.peak),
                    Measurement(subject: "corral read rate", unit: "MB/s", value: Double(bytes) / 1e6 / memory.seconds),
                ],
                targets: [
                    TargetCheck(
                        target: "memory < 64 MB",
                        observed: String(
                            format: "peak grew %.1f MB (process peak %.1f MB)", memory.growth, memory.peak),
                        met: memory.growth < 64)
                ]))
        report.notes.append(
            "memory: VmHWM from /proc/self/status, reset through /proc/self/clear_refs before the read; growth is over the RSS just before it"
        )
        report.notes.append(
            "slices use random start seqs; SQLite holds the same events, one row each, keyed by (session, seq)")
        try? FileManager.default.removeItem(at: big)

        // The PostgreSQL store beside these, when a cluster is named (`make bench` starts one).
        if let url = ProcessInfo.processInfo.environment["CORRAL_TEST_STORE_URL"], !url.isEmpty,
            appendRates.count == 6
        {
            let file = FileFigures(fsyncOne: corralFsync, fsyncSixteen: appendRates[1].1, noneSixteen: appendRates[5].1)
            let postgres = try await Self.postgres(url: url, sizes: sizes, file: file, context: context)
            for var comparison in postgres.comparisons {
                comparison.metric = "postgres: " + comparison.metric
                report.comparisons.append(comparison)
            }
            report.notes.append(contentsOf: postgres.notes)
        } else {
            report.notes.append(
                "postgres: not measured; set CORRAL_TEST_STORE_URL (scripts/postgres.sh up, then eval \"$(scripts/postgres.sh env)\")"
            )
        }
        return report
    }

    // MARK: corral

    static let smallPayload: JSONValue = [
        "role": "assistant", "text": "Listing the repository before editing the parser; two files look relevant.",
        "tool": ["name": "bash", "input": ["command": "ls -la src/ && git status --short"]],
    ]

    /// Events per second of fsync-per-event appends to one session, and of a bare
    /// write+fdatasync loop on the same file system, in alternating rounds.
    static func fsyncAgainstBareLoop(directory: URL, count: Int) async throws -> (bare: Double, corral: Double) {
        let store = FileSessionStore(directory: directory.appendingPathComponent("fsync-one"))
        let id = try await store.create().id
        let lease = try await store.currentLease(id)
        let rounds = 5
        let perRound = max(1, count / rounds)
        var bareSeconds = 0.0
        var corralSeconds = 0.0
        let barePath = directory.appendingPathComponent("bare.log").path
        defer { unlink(barePath) }
        sync()
        for _ in 0..<rounds {
            bareSeconds += Double(perRound) / (try Peers.bareFdatasync(path: barePath, count: perRound))
            let (_, milliseconds) = try await measureMilliseconds {
                for index in 0..<perRound {
                    _ = try await store.append(
                        id,
                        [
                            NewEvent(
                                type: "brain.response", data: index % 2 == 0 ? smallPayload : ["n": .int(Int64(index))])
                        ], lease: lease, durability: .fsync)
                }
            }
            corralSeconds += milliseconds / 1000
        }
        try? FileManager.default.removeItem(at: directory.appendingPathComponent("fsync-one"))
        return (Double(rounds * perRound) / bareSeconds, Double(rounds * perRound) / corralSeconds)
    }

    /// Events per second over `sessions` sessions appended concurrently, each by one task
    /// appending one event at a time, the way a harness does.
    static func corralAppends(directory: URL, sessions: Int, perSession: Int, durability: Durability) async throws
        -> Double
    {
        let store = FileSessionStore(directory: directory.appendingPathComponent("corral"))
        var ids: [(SessionID, Lease)] = []
        for _ in 0..<sessions {
            let id = try await store.create().id
            ids.append((id, try await store.currentLease(id)))
        }
        let (_, milliseconds) = try await measureMilliseconds {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (id, lease) in ids {
                    group.addTask {
                        for index in 0..<perSession {
                            _ = try await store.append(
                                id,
                                [
                                    NewEvent(
                                        type: "brain.response",
                                        data: index % 2 == 0 ? smallPayload : ["n": .int(Int64(index))])
                                ], lease: lease, durability: durability)
                        }
                        // Group commit's rate counts only events that reached the disk.
                        if case .groupCommit = durability { try await store.sync(id) }
                    }
                }
                try await group.waitForAll()
            }
        }
        return Double(sessions * perSession) / (milliseconds / 1000)
    }

    static func buildBigSession(directory: URL, events: Int) async throws -> (
        FileSessionStore, SessionID, Double, UInt64
    ) {
        let store = FileSessionStore(directory: directory.appendingPathComponent("corral"))
        let id = try await store.create().id
        let lease = try await store.currentLease(id)
        let filler = String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 21)
        let batch = 1000
        let (_, milliseconds) = try await measureMilliseconds {
            var written = 0
            while written < events {
                let count = min(batch, events - written)
                let chunk = (0..<count).map { offset in
                    NewEvent(type: "tool.result", data: ["n": .int(Int64(written + offset)), "text": .string(filler)])
                }
                _ = try await store.append(id, chunk, lease: lease, durability: .none)
                written += count
            }
            try await store.sync(id)
        }
        var bytes: UInt64 = 0
        let sessionDirectory = store.directory.appendingPathComponent(id.rawValue).path
        for name in try FileManager.default.contentsOfDirectory(atPath: sessionDirectory) where name.hasSuffix(".seg") {
            let attributes = try FileManager.default.attributesOfItem(atPath: sessionDirectory + "/" + name)
            bytes += (attributes[.size] as? UInt64) ?? 0
        }
        return (store, id, milliseconds / 1000, bytes)
    }

    static func readAllMeasuringMemory(store: FileSessionStore, id: SessionID, expected: Int) async throws -> (
        growth: Double, peak: Double, seconds: Double
    ) {
        let before = try Memory.residentMegabytes()
        try Memory.resetPeak()
        var count = 0
        let (_, milliseconds) = try await measureMilliseconds {
            for try await event in store.read(id) {
                count += 1
                if event.seq != UInt64(count) {
                    throw CorralError(.internalError, "read returned seq \(event.seq) at position \(count)")
                }
            }
        }
        guard count == expected else { throw CorralError(.internalError, "read \(count) events of \(expected)") }
        let peak = try Memory.peakMegabytes()
        return (max(0, peak - before), peak, milliseconds / 1000)
    }

    enum Memory {
        static func status(_ field: String) throws -> Double {
            let text = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
                let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) })
            else { throw CorralError(.unsupported, "/proc/self/status has no \(field)") }
            return kilobytes / 1024
        }

        static func residentMegabytes() throws -> Double { try status("VmRSS") }
        static func peakMegabytes() throws -> Double { try status("VmHWM") }

        /// Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0 and later).
        static func resetPeak() throws {
            try "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
        }
    }
}

/// The peers, written directly against their C interfaces, on threads of their own.
enum Peers {
    static func sqliteName(_ level: Durability) -> String {
        switch level {
        case .fsync: "sqlite-wal-full (txn per event)"
        case .groupCommit: "sqlite-wal-normal (txn per event)"
        case .none: "sqlite-wal-off (txn per event)"
        }
    }

    static func jsonlName(_ level: Durability) -> String {
        switch level {
        case .fsync: "jsonl, fdatasync per line"
        case .groupCommit: "jsonl, fdatasync every 2 ms"
        case .none: "jsonl, no fdatasync"
        }
    }

    static let line =
        Array(
            #"{"seq":1,"id":"ev-0123456789abcdef","type":"brain.response","time":"2025-01-01T00:00:00.000000Z","epoch":1,"data":{"role":"assistant","text":"Listing the repository before editing the parser; two files look relevant.","tool":{"input":{"command":"ls -la src/ && git status --short"},"name":"bash"}}}"#
                .utf8) + [0x0A]

    /// Runs `body(index)` on `count` threads at once; returns the seconds from start to the
    /// last one done.
    static func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws -> Double {
        let group = DispatchGroup()
        let failures = LockedErrors()
        let start = DispatchTime.now()
        for index in 0..<count {
            group.enter()
            let thread = Thread {
                do { try body(index) } catch { failures.add(error) }
                group.leave()
            }
            thread.start()
        }
        group.wait()
        if let first = failures.first { throw first }
        return Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
    }

    final class LockedErrors: @unchecked Sendable {
        private let lock = NSLock()
        private var errors: [any Error] = []
        func add(_ error: any Error) { lock.withLock { errors.append(error) } }
        var first: (any Error)? { lock.withLock { errors.first } }
    }

    /// write + fdatasync of one record-sized line, in a loop, appending to the file at
    /// `path`: the ceiling for any log that syncs each event on this file system.
    static func bareFdatasync(path: String, count: Int) throws -> Double {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CorralError(.io, "cannot open \(path)") }
        defer { close(fd) }
        let record = [UInt8](repeating: 0x61, count: 256)
        let seconds = try onThreads(1) { _ in
            for _ in 0..<count {
                guard record.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == record.count,
                    fdatasync(fd) == 0
                else {
                    throw CorralError(.io, "write or fdatasync failed on \(path)")
                }
            }
        }
        return Double(count) / seconds
    }

    static func jsonlAppends(directory: URL, sessions: Int, perSession: Int, level: Durability) throws -> Double {
        let seconds = try onThreads(sessions) { index in
            let path = directory.appendingPathComponent("session-\(index).jsonl").path
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw CorralError(.io, "cannot create \(path)") }
            defer { close(fd) }
            var lastSync = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<perSession {
                guard line.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == line.count else {
                    throw CorralError(.io, "write failed on \(path)")
                }
                switch level {
                case .fsync:
                    fdatasync(fd)
                case .groupCommit:
                    let now = DispatchTime.now().uptimeNanoseconds
                    if now - lastSync >= 2_000_000 {
                        fdatasync(fd)
                        lastSync = now
                    }
                case .none:
                    break
                }
            }
            if case .groupCommit = level { fdatasync(fd) }
        }
        return Double(sessions * perSession) / seconds
    }

    /// One database, one connection per session (thread), one row per event.
    static func sqliteAppends(directory: URL, sessions: Int, perSession: Int, level: Durability) throws -> Double {
        let path = directory.appendingPathComponent("events.sqlite").path
        let synchronous: String
        switch level {
        case .fsync: synchronous = "FULL"
        case .groupCommit: synchronous = "NORMAL"
        case .none: synchronous = "OFF"
        }
        do {
            let setup = try SQLite(path: path)
            try setup.execute("PRAGMA journal_mode=WAL")
            try setup.execute(
                "CREATE TABLE IF NOT EXISTS events (session TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, time INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (session, seq))"
            )
        }
        let data = String(decoding: line, as: UTF8.self)
        let seconds = try onThreads(sessions) { index in
            let database = try SQLite(path: path)
            // Sixteen connections take turns at one write lock; on a busy disk a turn can be long.
            // First: even setting `synchronous` can meet the lock while the others open (it once
            // failed with "database is locked").
            try database.execute("PRAGMA busy_timeout=600000")
            try database.execute("PRAGMA synchronous=\(synchronous)")
            let insert = try database.prepare(
                "INSERT INTO events (session, seq, id, type, time, data) VALUES (?, ?, ?, ?, ?, ?)")
            for seq in 1...perSession {
                try insert.run([
                    .text("se-\(index)"), .integer(Int64(seq)), .text("ev-\(index)-\(seq)"), .text("brain.response"),
                    .integer(Int64(seq)), .text(data),
                ])
            }
        }
        return Double(sessions * perSession) / seconds
    }

    /// The big session's events as SQLite rows, for slices and wake.
    final class SQLiteBigSession {
        let path: String
        let database: SQLite
        let select: SQLite.Statement

        init(directory: URL, events: Int) throws {
            path = directory.appendingPathComponent("big.sqlite").path
            database = try SQLite(path: path)
            try database.execute("PRAGMA journal_mode=WAL")
            try database.execute("PRAGMA synchronous=OFF")
            try database.execute(
                "CREATE TABLE events (session TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, time INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (session, seq))"
            )
            try database.execute("CREATE TABLE leases (session TEXT PRIMARY KEY, epoch INTEGER NOT NULL)")
            try database.execute("INSERT INTO leases VALUES ('big', 1)")
            let filler = String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 21)
            try database.execute("BEGIN")
            let insert = try database.prepare("INSERT INTO events VALUES ('big', ?, ?, 'tool.result', ?, ?)")
            for seq in 1...events {
                try insert.run([
                    .integer(Int64(seq)), .text("ev-\(seq)"), .integer(Int64(seq)),
                    .text(#"{"n":\#(seq - 1),"text":"\#(filler)"}"#),
                ])
            }
            try database.execute("COMMIT")
            try database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            select = try database.prepare(
                "SELECT seq, id, type, time, data FROM events WHERE session = 'big' AND seq >= ? ORDER BY seq LIMIT ?")
        }

        /// Milliseconds to fetch `count` rows from `from`, reading every column.
        func slice(from: Int64, count: Int) throws -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            let rows = try select.rows([.integer(from), .integer(Int64(count))])
            guard rows == count else { throw CorralError(.internalError, "sqlite slice returned \(rows) rows") }
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        }

        /// A new connection that bumps the lease epoch durably, then reads the first 100 rows.
        func wakeAndFirstRead() throws -> (Double, Double) {
            let start = DispatchTime.now().uptimeNanoseconds
            let fresh = try SQLite(path: path)
            try fresh.execute("PRAGMA synchronous=FULL")
            try fresh.execute("UPDATE leases SET epoch = epoch + 1 WHERE session = 'big'")
            let woken = DispatchTime.now().uptimeNanoseconds
            let rows = try fresh.prepare(
                "SELECT seq, id, type, time, data FROM events WHERE session = 'big' AND seq >= 1 ORDER BY seq LIMIT 100"
            ).rows([])
            let read = DispatchTime.now().uptimeNanoseconds
            guard rows == 100 else { throw CorralError(.internalError, "sqlite first read returned \(rows) rows") }
            return (Double(woken - start) / 1e6, Double(read - woken) / 1e6)
        }
    }
}

/// The few calls of SQLite's C interface the peers need.
final class SQLite: @unchecked Sendable {
    // @unchecked: each connection is used by one thread.
    let handle: OpaquePointer

    enum Value {
        case integer(Int64)
        case text(String)
    }

    init(path: String) throws {
        var connection: OpaquePointer?
        let status = sqlite3_open_v2(
            path, &connection, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        guard status == SQLITE_OK, let connection else {
            sqlite3_close(connection)
            throw CorralError(.io, "sqlite cannot open \(path): \(String(cString: sqlite3_errstr(status)))")
        }
        handle = connection
    }

    deinit { sqlite3_close_v2(handle) }

    func execute(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        guard sqlite3_exec(handle, sql, nil, nil, &message) == SQLITE_OK else {
            defer { sqlite3_free(message) }
            throw CorralError(.io, "sqlite: \(sql): \(message.map { String(cString: $0) } ?? "error")")
        }
    }

    func prepare(_ sql: String) throws -> Statement {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(handle, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw CorralError(.io, "sqlite cannot prepare \(sql): \(String(cString: sqlite3_errmsg(handle)))")
        }
        return Statement(connection: self, statement: statement)
    }

    final class Statement {
        let connection: SQLite
        let statement: OpaquePointer

        init(connection: SQLite, statement: OpaquePointer) {
            self.connection = connection
            self.statement = statement
        }

        deinit { sqlite3_finalize(statement) }

        private func bind(_ values: [Value]) {
            sqlite3_reset(statement)
            for (index, value) in values.enumerated() {
                switch value {
                case .integer(let number): sqlite3_bind_int64(statement, Int32(index + 1), number)
                case .text(let text):
                    sqlite3_bind_text(statement, Int32(index + 1), text, -1, corral_sqlite_transient())
                }
            }
        }

        func run(_ values: [Value]) throws {
            bind(values)
            let status = sqlite3_step(statement)
            guard status == SQLITE_DONE else {
                throw CorralError(.io, "sqlite step failed: \(String(cString: sqlite3_errmsg(connection.handle)))")
            }
        }

        /// Steps through every row, touching each column as a reader would; returns the count.
        func rows(_ values: [Value]) throws -> Int {
            bind(values)
            var count = 0
            while true {
                let status = sqlite3_step(statement)
                if status == SQLITE_DONE { return count }
                guard status == SQLITE_ROW else {
                    throw CorralError(.io, "sqlite step failed: \(String(cString: sqlite3_errmsg(connection.handle)))")
                }
                for column in 0..<sqlite3_column_count(statement) {
                    _ = sqlite3_column_bytes(statement, column)
                    _ = sqlite3_column_text(statement, column)
                }
                count += 1
            }
        }
    }
}

// MARK: PostgreSQL

/// The PostgreSQL session store on the cluster CORRAL_TEST_STORE_URL names (scripts/postgres.sh
/// starts one), beside the file store's figures of the same run and pgbench's single-row
/// insert rate on the same cluster: a transaction per row, `synchronous_commit` on, the floor
/// of any durable append there.
extension SessionSuite {
    struct FileFigures {
        var fsyncOne: Double
        var fsyncSixteen: Double
        var noneSixteen: Double
    }

    static func postgres(url text: String, sizes: Sizes, file: FileFigures, context: BenchContext) async throws
        -> SuiteReport
    {
        var report = SuiteReport(suite: "\(name) (postgres)")
        var url = try PostgresStoreURL(parsing: text)
        url.schema = "bench_\(UInt32.random(in: 0...UInt32.max))"
        var logger = Logger(label: "corral-bench.postgres")
        logger.logLevel = .warning
        let store = try await PostgresSessionStore.connect(.init(url: url), logger: logger)
        let pgbench = try Pgbench(url: url)
        try pgbench.prepare()
        defer { pgbench.cleanUp() }
        report.notes.append(
            "postgres: \(url) (schema \(url.schema), dropped after); pgbench: \(pgbench.binary), a custom script of one INSERT of a ~200-byte row per transaction"
        )
        report.notes.append(
            "postgres: 'append_one called by pgbench' is the store's own append function (fence, head, event, NOTIFY) run from pgbench's C client: the server's share of a single append, the ceiling for any client"
        )
        let rounds = context.quick ? 3 : 5
        func progress(_ text: String) { FileHandle.standardError.write(Data("session (postgres): \(text)\n".utf8)) }
        progress("single appends against pgbench")

        // One writer, a durable append at a time, against pgbench with one client.
        var single = Samples()
        var pgbenchSingle = Samples()
        var serverShare = Samples()
        let oneSession = try await store.create().id
        let oneLease = try await store.currentLease(oneSession)
        let serverSession = try await store.create().id
        try pgbench.prepareAppend(session: serverSession)
        let perRound = max(50, sizes.fsyncEvents / rounds)
        for _ in 0..<rounds {
            pgbenchSingle.append(try pgbench.insertRate(clients: 1, transactions: perRound))
            serverShare.append(try pgbench.appendRate(transactions: perRound))
            let (_, milliseconds) = try await measureMilliseconds {
                for index in 0..<perRound {
                    _ = try await store.append(
                        oneSession,
                        [
                            NewEvent(
                                type: "brain.response", data: index % 2 == 0 ? smallPayload : ["n": .int(Int64(index))])
                        ],
                        lease: oneLease, durability: .fsync)
                }
            }
            single.append(Double(perRound) / (milliseconds / 1000))
        }
        report.comparisons.append(
            Comparison(
                metric: "append, fsync per event, 1 session (events/s per round)",
                measurements: [
                    Measurement(subject: "corral postgres", unit: "events/s", samples: single),
                    Measurement(subject: "pgbench insert, 1 client", unit: "tx/s", samples: pgbenchSingle),
                    Measurement(subject: "append_one called by pgbench", unit: "tx/s", samples: serverShare),
                    Measurement(subject: "corral files (same run)", unit: "events/s", value: file.fsyncOne),
                ],
                targets: [
                    TargetCheck(
                        target: ">= 0.8x pgbench's single-row insert rate",
                        observed: String(
                            format: "%.2fx (%.0f vs %.0f/s)", single.median / pgbenchSingle.median, single.median,
                            pgbenchSingle.median),
                        met: single.median >= 0.8 * pgbenchSingle.median)
                ]))

        // Sixteen writers on sixteen sessions: group commit.
        progress("16 writers")
        for (level, durability) in [("fsync per event", Durability.fsync), ("no fsync", .none)] {
            var rates = Samples()
            var pgbenchRates = Samples()
            var eventsPerCommit = Samples()
            let perSession = max(
                20, (durability == .fsync ? sizes.fsyncEventsPerSession : sizes.lazyEventsPerSession / 10) / rounds)
            for _ in 0..<rounds {
                if durability == .fsync {
                    pgbenchRates.append(try pgbench.insertRate(clients: 16, transactions: perSession))
                }
                let commitsBefore = store.commits
                let rate = try await Self.postgresAppends(
                    store: store, sessions: 16, perSession: perSession, durability: durability)
                rates.append(rate)
                eventsPerCommit.append(Double(16 * perSession) / Double(max(1, store.commits - commitsBefore)))
            }
            var measurements = [
                Measurement(subject: "corral postgres", unit: "events/s", samples: rates),
                Measurement(
                    subject: "corral postgres, appends per transaction", unit: "appends", samples: eventsPerCommit),
                Measurement(
                    subject: "corral files (same run)", unit: "events/s",
                    value: durability == .fsync ? file.fsyncSixteen : file.noneSixteen),
            ]
            if durability == .fsync {
                measurements.append(
                    Measurement(subject: "pgbench insert, 16 clients", unit: "tx/s", samples: pgbenchRates))
            }
            report.comparisons.append(
                Comparison(
                    metric: "append, \(level), 16 writers on 16 sessions (group commit)", measurements: measurements))
        }

        // One big session: slices and wake.
        progress("a session of \(sizes.bigSessionEvents) events")
        let bigEvents = sizes.bigSessionEvents
        let big = try await store.create().id
        let bigLease = try await store.currentLease(big)
        let filler = String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 21)
        let (_, building) = try await measureMilliseconds {
            var written = 0
            while written < bigEvents {
                let count = min(1000, bigEvents - written)
                let chunk = (0..<count).map { offset in
                    NewEvent(type: "tool.result", data: ["n": .int(Int64(written + offset)), "text": .string(filler)])
                }
                _ = try await store.append(big, chunk, lease: bigLease, durability: .none)
                written += count
            }
            try await store.sync(big)
        }
        report.notes.append(
            String(format: "postgres big session: %d events written in %.1f s", bigEvents, building / 1000))
        var slices = Samples()
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<sizes.slices {
            let from = UInt64.random(in: 1...UInt64(bigEvents - 99), using: &generator)
            let (page, milliseconds) = try await measureMilliseconds {
                try await store.readPage(big, from: from, limit: 100)
            }
            guard page.events.count == 100, page.events.first?.seq == from else {
                throw CorralError(.internalError, "postgres slice from \(from) returned \(page.events.count) events")
            }
            slices.append(milliseconds)
        }
        let label = bigEvents >= 1_000_000 ? "1M" : "\(bigEvents / 1000)k"
        report.comparisons.append(
            Comparison(
                metric: "slice of 100 events from a \(label)-event session",
                measurements: [Measurement(subject: "corral postgres", unit: "ms", samples: slices)],
                targets: [
                    TargetCheck(
                        target: "p99 < 2 ms", observed: String(format: "p99 %.3f ms", slices.p99), met: slices.p99 < 2)
                ]))
        progress("wakes")
        var wakes = Samples()
        for _ in 0..<sizes.wakes {
            // A new store: what a replica that takes the session over does.
            let fresh = try await PostgresSessionStore.connect(.init(url: url), logger: logger)
            let (_, milliseconds) = try await measureMilliseconds { try await fresh.wake(big) }
            wakes.append(milliseconds)
            await fresh.shutdown()
        }
        report.comparisons.append(
            Comparison(
                metric: "wake a \(label)-event session (new store, lease epoch + 1, durable)",
                measurements: [Measurement(subject: "corral postgres", unit: "ms", samples: wakes)],
                targets: [
                    TargetCheck(
                        target: "< 20 ms", observed: String(format: "max %.2f ms", wakes.values.max() ?? .nan),
                        met: (wakes.values.max() ?? .infinity) < 20)
                ]))
        try await store.dropSchema()
        await store.shutdown()
        return report
    }

    static func postgresAppends(store: PostgresSessionStore, sessions: Int, perSession: Int, durability: Durability)
        async throws -> Double
    {
        var ids: [(SessionID, Lease)] = []
        for _ in 0..<sessions {
            let id = try await store.create().id
            ids.append((id, try await store.currentLease(id)))
        }
        let (_, milliseconds) = try await measureMilliseconds {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (id, lease) in ids {
                    group.addTask {
                        for index in 0..<perSession {
                            _ = try await store.append(
                                id,
                                [
                                    NewEvent(
                                        type: "brain.response",
                                        data: index % 2 == 0 ? smallPayload : ["n": .int(Int64(index))])
                                ],
                                lease: lease, durability: durability)
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        return Double(sessions * perSession) / (milliseconds / 1000)
    }

    /// pgbench on the store's cluster: a table of its own in the bench's schema, one INSERT
    /// per transaction.
    struct Pgbench {
        let url: PostgresStoreURL
        let binary: String
        let psql: String
        let script: URL

        init(url: PostgresStoreURL) throws {
            self.url = url
            let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
            guard
                let directory = versions.compactMap({ Int($0) }).sorted().last.map({ "/usr/lib/postgresql/\($0)/bin" }),
                FileManager.default.isExecutableFile(atPath: directory + "/pgbench")
            else {
                throw CorralError(
                    .notFound, "pgbench is not installed (no /usr/lib/postgresql/*/bin/pgbench)",
                    hint: "apt-get install postgresql (Debian's postgresql-15 ships pgbench)")
            }
            binary = directory + "/pgbench"
            psql = directory + "/psql"
            script = FileManager.default.temporaryDirectory.appendingPathComponent(
                "corral-pgbench-\(UUID().uuidString).sql")
        }

        /// Host, port and user; the database goes last (pgbench takes it as its argument).
        var connection: [String] {
            ["-h", url.socketDirectory ?? url.host, "-p", String(url.port), "-U", url.user]
        }

        var environment: [String: String] {
            var environment = ["PATH": "/usr/bin:/bin"]
            if let password = url.password { environment["PGPASSWORD"] = password }
            return environment
        }

        var table: String { "\(url.schema).pgbench_events" }

        /// The second script: the store's `append_one` on a session of its own, one event a call.
        var appendScript: URL { script.appendingPathExtension("append.sql") }

        func prepare() throws {
            let payload = JSONCodec.string(SessionSuite.smallPayload).replacingOccurrences(of: "'", with: "''")
            try "INSERT INTO \(table) (session_id, data) VALUES ('se-pgbench', '\(payload)');\n"
                .write(to: script, atomically: true, encoding: .utf8)
            _ = try BenchProcess.output(
                psql,
                connection + [
                    "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                    "CREATE TABLE \(table) (id bigserial PRIMARY KEY, session_id text NOT NULL, data text NOT NULL)",
                    url.database,
                ], environment: environment)
        }

        /// Transactions per second, as pgbench reports them, over `transactions` per client.
        /// A count, not `-T`: pgbench ends a timed run on SIGALRM, which the threads this
        /// process spawns from may have blocked.
        func insertRate(clients: Int, transactions: Int) throws -> Double {
            let output = try BenchProcess.output(
                binary,
                connection + [
                    "-n", "-c", String(clients), "-j", String(min(clients, 2)), "-t", String(transactions), "-f",
                    script.path, url.database,
                ],
                environment: environment)
            return try Self.tps(output)
        }

        func prepareAppend(session: SessionID) throws {
            let payload = JSONCodec.string(SessionSuite.smallPayload).replacingOccurrences(of: "'", with: "''")
            let channel = "corral_heads_\(url.schema)"
            try """
            SELECT r_outcome FROM \(url.schema).append_one('\(session.rawValue)', 1, -1, 0, 'ev-pgbench', false,
                'brain.response', '\(payload)', true, '\(channel)');

            """.write(to: appendScript, atomically: true, encoding: .utf8)
        }

        /// `append_one` calls per second from pgbench with one client, in the store's schema.
        func appendRate(transactions: Int) throws -> Double {
            var environment = self.environment
            environment["PGOPTIONS"] = "-c search_path=\(url.schema)"
            let output = try BenchProcess.output(
                binary,
                connection + ["-n", "-c", "1", "-t", String(transactions), "-f", appendScript.path, url.database],
                environment: environment)
            return try Self.tps(output)
        }

        static func tps(_ output: String) throws -> Double {
            guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("tps = ") }),
                let value = Double(line.dropFirst("tps = ".count).prefix { $0 == "." || $0.isNumber })
            else {
                throw CorralError(.internalError, "pgbench printed no tps line")
            }
            return value
        }

        func cleanUp() {
            try? FileManager.default.removeItem(at: script)
            try? FileManager.default.removeItem(at: appendScript)
        }
    }
}
