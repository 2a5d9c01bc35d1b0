import Foundation

/// One measured quantity: corral's figure and the peers' figures, taken in the same run.
public struct Measurement: Codable, Sendable {
    /// Who was measured: "corral", "docker-cli", "raw-api", "sqlite-wal-full", ...
    public var subject: String
    public var unit: String
    public var count: Int
    public var p50: Double
    public var p95: Double
    public var p99: Double

    public init(subject: String, unit: String, samples: Samples) {
        self.subject = subject
        self.unit = unit
        self.count = samples.count
        self.p50 = samples.median
        self.p95 = samples.p95
        self.p99 = samples.p99
    }

    /// A single figure (a rate, a peak) rather than a distribution.
    public init(subject: String, unit: String, value: Double) {
        self.init(subject: subject, unit: unit, samples: Samples([value]))
    }
}

/// A target the issue sets, checked against the run's own figures.
public struct TargetCheck: Codable, Sendable {
    public var target: String
    public var observed: String
    public var met: Bool

    public init(target: String, observed: String, met: Bool) {
        self.target = target
        self.observed = observed
        self.met = met
    }
}

public struct Comparison: Codable, Sendable {
    public var metric: String
    public var measurements: [Measurement]
    public var targets: [TargetCheck]

    public init(metric: String, measurements: [Measurement], targets: [TargetCheck] = []) {
        self.metric = metric
        self.measurements = measurements
        self.targets = targets
    }
}

public struct SuiteReport: Codable, Sendable {
    public var suite: String
    public var date: Date
    public var comparisons: [Comparison]
    public var notes: [String]

    public init(suite: String, comparisons: [Comparison] = [], notes: [String] = []) {
        self.suite = suite
        self.date = Date()
        self.comparisons = comparisons
        self.notes = notes
    }

    /// The table `make bench` prints: one row per subject, grouped by metric.
    public func renderTable() -> String {
        var lines = ["== suite \(suite) =="]
        let header = ["metric", "subject", "n", "p50", "p95", "p99", "unit"]
        var rows: [[String]] = []
        for comparison in comparisons {
            for (index, m) in comparison.measurements.enumerated() {
                rows.append([
                    index == 0 ? comparison.metric : "", m.subject, "\(m.count)",
                    Self.format(m.p50), m.count > 1 ? Self.format(m.p95) : "", m.count > 1 ? Self.format(m.p99) : "",
                    m.unit,
                ])
            }
        }
        let widths = header.indices.map { column in
            ([header] + rows).map { $0[column].count }.max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                index >= 2 && index <= 5
                    ? String(repeating: " ", count: widths[index] - cell.count) + cell
                    : cell + String(repeating: " ", count: widths[index] - cell.count)
            }.joined(separator: "  ")
        }
        lines.append(line(header))
        lines += rows.map(line)
        let checks = comparisons.flatMap { c in c.targets.map { (c.metric, $0) } }
        if !checks.isEmpty {
            lines.append("targets:")
            for (metric, check) in checks {
                lines.append(
                    "  [\(check.met ? "met" : "MISSED")] \(metric): \(check.target) (observed \(check.observed))")
            }
        }
        for note in notes { lines.append("note: \(note)") }
        return lines.joined(separator: "\n")
    }

    static func format(_ value: Double) -> String {
        if value.isNaN { return "-" }
        if value >= 10_000 { return String(format: "%.0f", value) }
        if value >= 100 { return String(format: "%.1f", value) }
        return String(format: "%.3f", value)
    }
}
