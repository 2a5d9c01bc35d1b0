import NIOCore

/// How much of each measure a run takes; the full plan keeps a run of four protocols under 40 s.
struct Plan: Sendable {
    /// Small calls per protocol before anything is measured (and a few streams, and a burst).
    var warmupCalls: Int
    /// Sequential small calls per protocol, over all rounds.
    var sequentialCalls: Int
    /// Each measure is split into this many rounds, and each round visits every protocol in turn
    /// (starting one further along each time), so that noise falls on all of them alike.
    var rounds: Int
    var callers = 32
    /// Time with `callers` concurrent callers per protocol, over all rounds.
    var concurrentDuration: Duration
    var streamBytes = 16 << 20
    /// Streamed answers per protocol, over all rounds.
    var streamRuns: Int
    var stallBytes = 64 << 20
    /// How long a stalled call runs before the calls beside it are timed: enough to fill its window.
    var stallSettle = Duration.milliseconds(200)
    /// Sequential small calls per protocol beside a stalled call, over all rounds (a stalled call
    /// each round, and as many calls without one just before it).
    var stalledCalls: Int

    static let full = Plan(
        warmupCalls: 300, sequentialCalls: 2000, rounds: 4, concurrentDuration: .seconds(2), streamRuns: 20,
        stalledCalls: 2000)
    static let quick = Plan(
        warmupCalls: 100, sequentialCalls: 400, rounds: 2, concurrentDuration: .milliseconds(500), streamRuns: 6,
        stalledCalls: 400)
}

/// What one protocol gave, sample by sample.
struct Samples {
    /// Sequential small calls, µs.
    var sequential: [Double] = []
    /// Small calls with 32 callers at once, µs.
    var concurrent: [Double] = []
    var concurrentSeconds = 0.0
    /// Whole streamed answers, ms.
    var stream: [Double] = []
    /// Sequential small calls beside a stalled call, µs.
    var stalled: [Double] = []
    /// The same number of calls just before each stalled call was opened, µs.
    var stalledBaseline: [Double] = []
    /// Bytes the control plane's socket received on each stalled call before the timed calls began.
    var stalledReceived: [Int] = []
    /// Bytes the worker had written on each stalled call when the timed calls began and ended.
    var stalledWrittenAtStart: [Int] = []
    var stalledWrittenAtEnd: [Int] = []
    /// CPU seconds the process used (both ends) in each section while this protocol was measured.
    var cpuSeconds: [Section: Double] = [:]
}

/// The measures, in the order they run.
enum Section: String, CaseIterable {
    case sequential = "sequential small calls"
    case concurrent = "concurrent callers"
    case stream = "streamed answers"
    case stalled = "small calls beside a stalled call"
}

/// The measures themselves, one protocol at a time.
enum Measure {
    /// A small call's body, and its answer's: 100 bytes.
    static let smallBody = ByteBuffer(repeating: 0x61, count: 100)
    static let clock = ContinuousClock()

    static func microseconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) * 1e6 + Double(attoseconds) / 1e12
    }

    /// `calls` small calls one after another; each one's round trip in µs.
    static func sequential(_ link: any LinkClient, calls: Int) async throws -> [Double] {
        var samples: [Double] = []
        samples.reserveCapacity(calls)
        for _ in 0..<calls {
            let start = clock.now
            let answer = try await link.echo(smallBody)
            samples.append(microseconds(clock.now - start))
            guard answer == smallBody else { throw BenchError("\(link.name): the echo came back changed") }
        }
        return samples
    }

    /// `callers` tasks making small calls one after another until `duration` is over: every call's
    /// round trip in µs, and the seconds until the last call was back.
    static func concurrent(
        _ link: any LinkClient, callers: Int, duration: Duration
    ) async throws -> (latencies: [Double], seconds: Double) {
        let start = clock.now
        let deadline = start + duration
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for _ in 0..<callers {
                group.addTask {
                    var samples: [Double] = []
                    while clock.now < deadline {
                        let begun = clock.now
                        _ = try await link.echo(smallBody)
                        samples.append(microseconds(clock.now - begun))
                    }
                    return samples
                }
            }
            var all: [Double] = []
            for try await samples in group { all += samples }
            return all
        }
        return (latencies, microseconds(clock.now - start) / 1e6)
    }

    /// `runs` answers of `bytes` each, read whole; each one's time in ms.
    static func stream(_ link: any LinkClient, bytes: Int, runs: Int) async throws -> [Double] {
        var samples: [Double] = []
        for _ in 0..<runs {
            let start = clock.now
            let received = try await link.download(bytes: bytes)
            samples.append(microseconds(clock.now - start) / 1e3)
            guard received == bytes else { throw BenchError("\(link.name): \(received) bytes of \(bytes) came") }
        }
        return samples
    }

    /// Times `calls` sequential small calls, then opens a call for `plan.stallBytes` that is never
    /// read, lets it fill its window, and times `calls` more beside it. Also what reached the
    /// control plane's socket before the timed calls (only the stalled call runs then), and what
    /// the worker's handler had written on the stalled call before and after those calls.
    static func stalled(
        _ link: any LinkClient, plan: Plan, calls: Int
    ) async throws -> (baseline: [Double], latencies: [Double], received: Int, writtenAtStart: Int, writtenAtEnd: Int) {
        let baseline = try await sequential(link, calls: calls)
        let before = link.stalledBytesWritten
        let receivedBefore = link.receivedBytes
        let call = try await link.stall(bytes: plan.stallBytes)
        do {
            try await Task.sleep(for: plan.stallSettle)
            let received = link.receivedBytes - receivedBefore
            let atStart = link.stalledBytesWritten - before
            let latencies = try await sequential(link, calls: calls)
            let atEnd = link.stalledBytesWritten - before
            await call.end()
            return (baseline, latencies, received, atStart, atEnd)
        } catch {
            await call.end()
            throw error
        }
    }
}
