import CorralCore
import CorralHost
import CorralSandbox
import DockerEngine
import Foundation
import Synchronization

/// What the pools and the engine host looked like over the last hour, sampled every few
/// seconds by `ConsoleSampler`, for the console's charts. Kept in memory: a restarted
/// corrald starts its charts afresh.
final class ConsoleHistory: Sendable {
    struct PoolSample: Sendable, Hashable {
        var time: Date
        var idle: Int
        var preparing: Int
        var claimed: Int
        var state: String
    }

    /// Provisioning over one sampling interval, every template together (the provisioner
    /// counts latencies per path, not per template).
    struct ProvisionSample: Sendable, Hashable {
        var time: Date
        /// Warm claims in the interval, and their latency percentiles (ms).
        var warm: Int
        var warmP50: Double?
        var warmP95: Double?
        var cold: Int
        var coldP50: Double?
        var coldP95: Double?
        /// Pool members made in the interval, per minute.
        var fillPerMinute: Double
    }

    /// The one engine host there is until workers land: corrald's own engine.
    struct EngineHost: Sendable, Hashable {
        var checked: Date?
        var detailsChecked: Date?
        var lastHeartbeat: Date?
        var healthy = false
        var lastError: String?
        var version: String?
        var apiVersion: String?
        var operatingSystem: String?
        var cpus: Int?
        var memory: Int64?
        var containers: Int?
        var runtimes: [String] = []
    }

    struct State: Sendable {
        var pools: [TemplateName: [PoolSample]] = [:]
        var provisions: [ProvisionSample] = []
        var engine = EngineHost()
        var lastSnapshot: ProvisionMetrics.Snapshot?
        var lastSnapshotTime: Date?
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int = 720) {
        self.capacity = capacity
    }

    var snapshot: State { state.withLock { $0 } }

    func record(pools statuses: [PoolStatus], metrics: ProvisionMetrics.Snapshot, at time: Date) {
        state.withLock { state in
            for status in statuses {
                var samples = state.pools[status.template, default: []]
                samples.append(
                    PoolSample(
                        time: time, idle: status.idle, preparing: status.preparing, claimed: status.claimed,
                        state: status.state.rawValue))
                if samples.count > capacity { samples.removeFirst(samples.count - capacity) }
                state.pools[status.template] = samples
            }
            if let last = state.lastSnapshot, let lastTime = state.lastSnapshotTime {
                let warm = max(0, metrics.warmProvisions - last.warmProvisions)
                let cold = max(0, metrics.coldProvisions - last.coldProvisions)
                let newWarm = Array(metrics.warmMilliseconds.suffix(min(warm, metrics.warmMilliseconds.count)))
                let newCold = Array(metrics.coldMilliseconds.suffix(min(cold, metrics.coldMilliseconds.count)))
                let minutes = max(time.timeIntervalSince(lastTime) / 60, 1e-6)
                state.provisions.append(
                    ProvisionSample(
                        time: time, warm: warm, warmP50: SessionSummary.percentile(newWarm, 0.5),
                        warmP95: SessionSummary.percentile(newWarm, 0.95), cold: cold,
                        coldP50: SessionSummary.percentile(newCold, 0.5),
                        coldP95: SessionSummary.percentile(newCold, 0.95),
                        fillPerMinute: Double(max(0, metrics.membersMade - last.membersMade)) / minutes))
                if state.provisions.count > capacity {
                    state.provisions.removeFirst(state.provisions.count - capacity)
                }
            }
            state.lastSnapshot = metrics
            state.lastSnapshotTime = time
        }
    }

    func record(engine update: (inout EngineHost) -> Void) {
        state.withLock { update(&$0.engine) }
    }
}
