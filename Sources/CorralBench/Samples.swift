/// A set of measurements of one quantity, with the order statistics a report needs.
public struct Samples: Sendable {
    public private(set) var values: [Double] = []

    public init(_ values: [Double] = []) { self.values = values }

    public mutating func append(_ value: Double) { values.append(value) }

    public var count: Int { values.count }

    /// Nearest-rank percentile; `p` in 0...100. NaN when there are no samples.
    public func percentile(_ p: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
        return sorted[min(max(rank - 1, 0), sorted.count - 1)]
    }

    public var median: Double { percentile(50) }
    public var p95: Double { percentile(95) }
    public var p99: Double { percentile(99) }
    public var mean: Double { values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count) }
}

/// Milliseconds elapsed while `body` runs, measured on the continuous clock.
public func measureMilliseconds<T>(_ body: () async throws -> T) async rethrows -> (T, Double) {
    let clock = ContinuousClock()
    let start = clock.now
    let value = try await body()
    let elapsed = clock.now - start
    return (value, elapsed.benchMilliseconds)
}

extension Duration {
    var benchMilliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }

    var benchSeconds: Double { benchMilliseconds / 1000 }
}
