import CorralCore
import Metrics
import Synchronization

/// In-process counters of provisioning: warm and cold provisions, claim latency, refill
/// failures, reaped sandboxes.
///
/// Each figure goes two ways: to swift-metrics (labels `corral_*`, with a `template`
/// dimension), so that whoever bootstraps a metrics backend (corrald, with Prometheus) exports
/// it; and to this object's own snapshot, which is per provisioner and needs no global
/// bootstrap, for tests and `corral pool ls`.
public final class ProvisionMetrics: Sendable {
    public struct Snapshot: Sendable, Hashable, Codable {
        public var warmProvisions = 0
        public var coldProvisions = 0
        /// Claims that lost a member to another claimer and tried the next one.
        public var claimConflicts = 0
        public var refillFailures = 0
        public var membersMade = 0
        public var membersRetired = 0
        /// Reaped sandboxes by reason: expired, idle, orphan, unknown-template.
        public var reaped: [String: Int] = [:]
        /// Milliseconds from provision() to a handle, warm path.
        public var warmMilliseconds: [Double] = []
        public var coldMilliseconds: [Double] = []

        public var reapedTotal: Int { reaped.values.reduce(0, +) }
    }

    private let state = Mutex(Snapshot())

    public init() {}

    public func snapshot() -> Snapshot { state.withLock { $0 } }

    /// Keeps the last this-many latencies in the snapshot.
    static let latencyWindow = 1024

    func provisioned(path: ProvisionReport.Path, template: TemplateName?, milliseconds: Double) {
        let dimensions = [("template", template?.rawValue ?? "-"), ("path", path.rawValue)]
        Counter(label: "corral_provisions_total", dimensions: dimensions).increment()
        Metrics.Timer(label: "corral_provision_seconds", dimensions: dimensions)
            .recordNanoseconds(Int64(milliseconds * 1e6))
        state.withLock {
            switch path {
            case .warm:
                $0.warmProvisions += 1
                $0.warmMilliseconds = Array(($0.warmMilliseconds + [milliseconds]).suffix(Self.latencyWindow))
            case .cold:
                $0.coldProvisions += 1
                $0.coldMilliseconds = Array(($0.coldMilliseconds + [milliseconds]).suffix(Self.latencyWindow))
            }
        }
    }

    func claimConflict(template: TemplateName) {
        Counter(label: "corral_claim_conflicts_total", dimensions: [("template", template.rawValue)]).increment()
        state.withLock { $0.claimConflicts += 1 }
    }

    func refillFailed(template: TemplateName) {
        Counter(label: "corral_refill_failures_total", dimensions: [("template", template.rawValue)]).increment()
        state.withLock { $0.refillFailures += 1 }
    }

    func memberMade(template: TemplateName) {
        Counter(label: "corral_pool_members_made_total", dimensions: [("template", template.rawValue)]).increment()
        state.withLock { $0.membersMade += 1 }
    }

    func memberRetired(template: TemplateName, reason: String) {
        Counter(
            label: "corral_pool_members_retired_total",
            dimensions: [("template", template.rawValue), ("reason", reason)]
        ).increment()
        state.withLock { $0.membersRetired += 1 }
    }

    func poolSize(template: TemplateName, idle: Int, preparing: Int) {
        Gauge(label: "corral_pool_idle", dimensions: [("template", template.rawValue)]).record(idle)
        Gauge(label: "corral_pool_preparing", dimensions: [("template", template.rawValue)]).record(preparing)
    }

    func reaped(reason: String) {
        Counter(label: "corral_reaped_total", dimensions: [("reason", reason)]).increment()
        state.withLock { $0.reaped[reason, default: 0] += 1 }
    }
}
