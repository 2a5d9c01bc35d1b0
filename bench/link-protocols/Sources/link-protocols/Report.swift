#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#endif

/// A sample set's size, median, 95th percentile (nearest rank) and mean.
struct Summary: Codable {
    let count: Int
    let p50: Double
    let p95: Double
    let mean: Double

    init(_ samples: [Double]) {
        let sorted = samples.sorted()
        count = sorted.count
        p50 = Self.percentile(50, of: sorted)
        p95 = Self.percentile(95, of: sorted)
        mean = sorted.isEmpty ? 0 : sorted.reduce(0, +) / Double(sorted.count)
    }

    static func percentile(_ percent: Double, of sorted: [Double]) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let rank = Int((percent / 100 * Double(sorted.count)).rounded(.up))
        return sorted[min(max(rank - 1, 0), sorted.count - 1)]
    }
}

/// One protocol's figures.
struct Figures: Codable {
    let name: String
    let sequentialMicroseconds: Summary
    let concurrentMicroseconds: Summary
    let concurrentCallsPerSecond: Double
    let streamMilliseconds: Summary
    /// The streamed answer's size over its median time.
    let streamMebibytesPerSecond: Double
    let stalledMicroseconds: Summary
    /// The calls made in the same rounds just before each stalled call was opened.
    let unstalledMicroseconds: Summary
    /// The median small call beside a stalled call over the median without one (same rounds).
    let stalledToUnstalledP50: Double
    /// What the control plane's socket received on the stalled calls before the timed calls
    /// began (median over the rounds): flow control should hold it near the stream window.
    let stalledMebibytesReceived: Double
    /// What the worker's handler had written on the stalled calls (median over the rounds) when the
    /// timed calls began and when they ended: accepted by its end of the link, not all sent.
    let stalledMebibytesWrittenAtStart: Double
    let stalledMebibytesWrittenAtEnd: Double
    /// CPU time per call or stream, both ends together (less sensitive to a busy machine than time).
    let sequentialCPUMicrosecondsPerCall: Double
    let concurrentCPUMicrosecondsPerCall: Double
    let streamCPUMillisecondsPerStream: Double

    init(name: String, samples: Samples, plan: Plan) {
        self.name = name
        sequentialMicroseconds = Summary(samples.sequential)
        concurrentMicroseconds = Summary(samples.concurrent)
        concurrentCallsPerSecond =
            samples.concurrentSeconds > 0 ? Double(samples.concurrent.count) / samples.concurrentSeconds : 0
        streamMilliseconds = Summary(samples.stream)
        let mebibytes = Double(plan.streamBytes) / Double(1 << 20)
        streamMebibytesPerSecond = streamMilliseconds.p50 > 0 ? mebibytes / (streamMilliseconds.p50 / 1e3) : 0
        stalledMicroseconds = Summary(samples.stalled)
        unstalledMicroseconds = Summary(samples.stalledBaseline)
        stalledToUnstalledP50 =
            unstalledMicroseconds.p50 > 0 ? stalledMicroseconds.p50 / unstalledMicroseconds.p50 : 0
        stalledMebibytesReceived = Summary(samples.stalledReceived.map(Double.init)).p50 / Double(1 << 20)
        stalledMebibytesWrittenAtStart = Summary(samples.stalledWrittenAtStart.map(Double.init)).p50 / Double(1 << 20)
        stalledMebibytesWrittenAtEnd = Summary(samples.stalledWrittenAtEnd.map(Double.init)).p50 / Double(1 << 20)
        func perSample(_ section: Section, _ count: Int, scale: Double) -> Double {
            count > 0 ? (samples.cpuSeconds[section] ?? 0) / Double(count) * scale : 0
        }
        sequentialCPUMicrosecondsPerCall = perSample(.sequential, samples.sequential.count, scale: 1e6)
        concurrentCPUMicrosecondsPerCall = perSample(.concurrent, samples.concurrent.count, scale: 1e6)
        streamCPUMillisecondsPerStream = perSample(.stream, samples.stream.count, scale: 1e3)
    }
}

/// What `--json` writes.
struct Report: Codable {
    let quick: Bool
    let sequentialCalls: Int
    let callers: Int
    let concurrentSeconds: Double
    let streamMebibytes: Int
    let streamRuns: Int
    let stallMebibytes: Int
    let stalledCalls: Int
    let protocols: [Figures]
    /// The release binary's size (it holds every protocol), and the process's peak resident size.
    let binaryBytes: Int?
    let peakResidentBytes: Int?
    /// The machine's load average (1 min) before and after the run.
    let loadAverageBefore: Double?
    let loadAverageAfter: Double?
    let seconds: Double

    /// The figures as a table: a row per measure, a column per protocol.
    var table: String {
        let rows: [(String, (Figures) -> String)] = [
            ("sequential small call p50 (µs)", { Self.format($0.sequentialMicroseconds.p50) }),
            ("sequential small call p95 (µs)", { Self.format($0.sequentialMicroseconds.p95) }),
            ("sequential: CPU per call (µs)", { Self.format($0.sequentialCPUMicrosecondsPerCall) }),
            ("\(callers) callers: calls/s", { Self.format($0.concurrentCallsPerSecond, digits: 0) }),
            ("\(callers) callers: p50 (µs)", { Self.format($0.concurrentMicroseconds.p50) }),
            ("\(callers) callers: p95 (µs)", { Self.format($0.concurrentMicroseconds.p95) }),
            ("\(callers) callers: CPU per call (µs)", { Self.format($0.concurrentCPUMicrosecondsPerCall) }),
            ("\(streamMebibytes) MiB stream p50 (ms)", { Self.format($0.streamMilliseconds.p50) }),
            ("\(streamMebibytes) MiB stream p95 (ms)", { Self.format($0.streamMilliseconds.p95) }),
            ("\(streamMebibytes) MiB stream at p50 (MiB/s)", { Self.format($0.streamMebibytesPerSecond, digits: 0) }),
            ("\(streamMebibytes) MiB stream: CPU per stream (ms)", { Self.format($0.streamCPUMillisecondsPerStream) }),
            ("beside a stalled call: p50 (µs)", { Self.format($0.stalledMicroseconds.p50) }),
            ("beside a stalled call: p95 (µs)", { Self.format($0.stalledMicroseconds.p95) }),
            ("same rounds, no stalled call: p50 (µs)", { Self.format($0.unstalledMicroseconds.p50) }),
            ("stalled p50 / unstalled p50", { Self.format($0.stalledToUnstalledP50, digits: 2) }),
            ("stalled call: caller received (MiB)", { Self.format($0.stalledMebibytesReceived, digits: 2) }),
            (
                "stalled call: worker wrote (MiB), start/end",
                {
                    Self.format($0.stalledMebibytesWrittenAtStart, digits: 2) + "/"
                        + Self.format($0.stalledMebibytesWrittenAtEnd, digits: 2)
                }
            ),
        ]
        let labelWidth = rows.map(\.0.count).max() ?? 0
        let width = max(16, (protocols.map(\.name.count).max() ?? 0) + 2)
        var lines = [Self.pad("", labelWidth) + protocols.map { Self.pad($0.name, width, left: true) }.joined()]
        for (label, value) in rows {
            lines.append(
                Self.pad(label, labelWidth) + protocols.map { Self.pad(value($0), width, left: true) }.joined())
        }
        return lines.joined(separator: "\n")
    }

    static func format(_ value: Double, digits: Int = 1) -> String {
        guard value.isFinite else { return "-" }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let rounded = (value * scale).rounded() / scale
        let text = digits == 0 ? String(Int(rounded)) : String(rounded)
        guard digits > 0, let dot = text.firstIndex(of: ".") else { return text }
        let decimals = text.distance(from: dot, to: text.endIndex) - 1
        return text + String(repeating: "0", count: max(0, digits - decimals))
    }

    static func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - text.count))
        return left ? fill + text : text + fill
    }

    func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path))
    }
}

/// Figures of this process from /proc (Linux only).
enum ProcessFigures {
    /// The size of this executable.
    static var binaryBytes: Int? {
        #if canImport(Glibc)
        var status = stat()
        guard stat("/proc/self/exe", &status) == 0 else { return nil }
        return Int(status.st_size)
        #else
        return nil
        #endif
    }

    /// CPU time (user and system) this process has used so far, both ends of every link.
    static var cpuSeconds: Double {
        #if canImport(Glibc)
        var usage = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return 0 }
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
        #else
        return 0
        #endif
    }

    /// The load average over the last minute, which tells how busy the machine was.
    static var loadAverage: Double? {
        guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return nil }
        return text.split(separator: " ").first.flatMap { Double($0) }
    }

    /// The peak resident set size (VmHWM), over both ends of every link.
    static var peakResidentBytes: Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let fields = line.split { $0 == " " || $0 == "\t" }
            let kilobytes = fields.dropFirst().first.flatMap { Int($0) }
            return kilobytes.map { $0 * 1024 }
        }
        return nil
    }
}
