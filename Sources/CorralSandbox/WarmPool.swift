import CorralCore
import DockerEngine
import Foundation
import Logging

/// Started, set-up sandboxes of one template, waiting to be claimed.
///
/// A long-running service: `run()` adopts the members already on the engine (found by label),
/// keeps `min_idle` of them, refills in the background with bounded concurrency, recycles
/// members older than `max_age` or made from an older version of the template, and replaces
/// members that died. While it runs, its provisioner claims from it first.
///
/// The engine is the source of truth: every pass lists the members anew and the pool's own
/// list is only a cache of which idle members to hand out next. A claim takes a member's claim
/// marker (exactly one claimer wins, in any process), then renames the container to the
/// tenant's name.
///
/// When a pass fails (the engine is out, the image is gone, setup fails) the pool reports
/// itself `degraded`, retries with exponential backoff and recovers by itself.
public actor WarmPool {
    public struct Configuration: Sendable {
        /// Time between passes when nothing wakes the pool sooner (a claim does).
        public var checkInterval: Duration = .seconds(5)
        /// How long the refill waits after a claim that left idle members behind. Making a
        /// member takes the engine host's CPU for about half a second; started at once, it
        /// competed with the claimer's first calls on the sandbox it had just got (on two
        /// cores, its first executes took 2-3 times as long). A claim that takes the last idle
        /// member refills at once.
        public var refillDelay: Duration = .milliseconds(500)
        /// Waits after failed passes.
        public var backoff = Backoff()
        public var timer: ServiceTimer = .system
        /// Where the status is published for other processes (`corral pool ls`); nil: nowhere.
        public var statusDirectory: URL?

        public init() {}
    }

    struct Member: Sendable {
        var id: SandboxID
        var created: Date
    }

    public nonisolated let template: SandboxTemplate
    /// Makes, takes and discards members; the pool never calls the provisioner.
    let maker: ContainerMaker
    /// Where the pool is found by provisioning in this process while it runs.
    let registry: PoolRegistry
    let configuration: Configuration
    let logger: Logger

    /// Idle members to hand out, oldest first.
    private var idle: [Member] = []
    /// Members being made by this process.
    private var preparing: Set<SandboxID> = []
    /// Members being claimed by this process right now.
    private var claiming: Set<SandboxID> = []
    /// Members this pool handed out or retired; a listing taken before that happened must not
    /// bring them back.
    private var taken: Set<SandboxID> = []
    private var status: PoolStatus
    private let statusWaiters: ConditionWaiters<PoolStatus>
    /// A claim happened while no sleep was in progress: skip the next sleep.
    private var wakePending = false
    private var sleeper: Task<Void, Never>?
    /// A wake already set for `refillDelay` after a claim: a burst of claims sets one.
    private var wakeScheduled = false
    /// Idle members wanted, set at run time (a control plane's push to its worker); nil: the
    /// template's `min_idle`. While it is set, idle members past it are retired.
    private var targetOverride: Int?

    public init(
        template: SandboxTemplate, provisioner: Provisioner, configuration: Configuration = Configuration(),
        logger: Logger? = nil
    ) {
        self.template = template
        self.maker = provisioner.maker
        self.registry = provisioner.pools
        self.configuration = configuration
        self.logger = logger ?? Logger(label: "corral.pool")
        let initial = PoolStatus(template: template, updated: configuration.timer.now())
        self.status = initial
        self.statusWaiters = ConditionWaiters(initial)
    }

    // MARK: Service

    /// Runs passes until cancelled: one at once, then every `checkInterval`, sooner after a
    /// claim, later (with backoff) after failures. Cancellation stops it cleanly; idle members
    /// stay on the engine for the next process to adopt.
    public func run() async throws {
        registry.register(self, template: template.name)
        defer {
            registry.unregister(template: template.name, pool: self)
            status.state = .stopped
            publish()
        }
        logger.info("pool started", metadata: ["template": "\(template.name)", "min_idle": "\(template.pool.minIdle)"])
        while !Task.isCancelled {
            await reconcile()
            if Task.isCancelled { break }
            let delay =
                status.consecutiveFailures == 0
                ? configuration.checkInterval : configuration.backoff.delay(afterFailures: status.consecutiveFailures)
            await sleep(for: delay)
        }
        logger.info("pool stopped", metadata: ["template": "\(template.name)"])
    }

    private func sleep(for delay: Duration) async {
        if wakePending {
            wakePending = false
            return
        }
        let timer = configuration.timer
        let task = Task { _ = try? await timer.sleep(for: delay) }
        sleeper = task
        await withTaskCancellationHandler {
            await task.value
        } onCancel: {
            task.cancel()
        }
        sleeper = nil
        wakePending = false
    }

    /// Starts the next pass now (after a claim that took the last idle member, a new target).
    private func wake() {
        if let sleeper {
            sleeper.cancel()
        } else {
            wakePending = true
        }
    }

    /// Starts the next pass after `refillDelay`, unless one starts sooner. Real time, not
    /// `timer`'s: the delay is about the host's CPU, not the pool's schedule.
    private func wakeSoon() {
        let delay = configuration.refillDelay
        guard delay > .zero else { return wake() }
        guard !wakeScheduled else { return }
        wakeScheduled = true
        Task { [weak self] in
            // Time is the point here: the refill waits out the claimer's first calls.
            try? await Task.sleep(for: delay)
            await self?.scheduledWake()
        }
    }

    private func scheduledWake() {
        wakeScheduled = false
        wake()
    }

    // MARK: Status

    public func currentStatus() -> PoolStatus { status }

    /// Idle members to keep now.
    var target: Int { targetOverride ?? template.pool.minIdle }

    /// Sets how many idle members to keep (within `max_total`) until set again; nil goes back
    /// to the template's `min_idle`. A lower target retires the newest idle members past it at
    /// the next pass, which starts now.
    public func setTarget(minIdle: Int?) {
        guard targetOverride != minIdle else { return }
        targetOverride = minIdle.map { max(0, $0) }
        status.minIdle = target
        logger.info("pool target set", metadata: ["template": "\(template.name)", "min_idle": "\(target)"])
        publish()
        wake()
    }

    /// Waits until the status satisfies `condition`; returns that status.
    public nonisolated func waitForStatus(_ condition: @escaping @Sendable (PoolStatus) -> Bool) async throws
        -> PoolStatus
    {
        try await statusWaiters.wait(until: condition)
    }

    private func publish() {
        status.idle = idle.count
        status.preparing = preparing.count
        status.updated = configuration.timer.now()
        if let directory = configuration.statusDirectory { status.publish(to: directory) }
        maker.metrics.poolSize(template: template.name, idle: status.idle, preparing: status.preparing)
        statusWaiters.update(status)
    }

    // MARK: Claims

    /// Hands out an idle member to `tenant`: nil when none is idle (the caller goes cold).
    func claim(tenant: TenantID) async throws -> MemberClaim? {
        defer { idle.isEmpty ? wake() : wakeSoon() }
        while !idle.isEmpty {
            let member = idle.removeFirst()
            claiming.insert(member.id)
            taken.insert(member.id)
            defer { claiming.remove(member.id) }
            let won: Bool
            do {
                won = try await maker.takeMember(member.id, template: template.name, tenant: tenant)
            } catch {
                // The engine failed, not the claim: the member may be fine, keep it.
                taken.remove(member.id)
                idle.insert(member, at: 0)
                throw error
            }
            if won { return MemberClaim(id: member.id, created: member.created) }
        }
        return nil
    }

    // MARK: Passes

    /// One pass: list the members on the engine, adopt the idle ones, retire the dead, stale
    /// and old ones, and make new ones up to `min_idle` (within `max_total`). Failures mark the
    /// pool degraded; they are not thrown.
    public func reconcile() async {
        do {
            try await reconcileOnce()
            status.consecutiveFailures = 0
            status.lastError = nil
            status.state = .ready
        } catch is CancellationError {
            return
        } catch let error as CorralError where error.code == .cancelled {
            return
        } catch {
            status.consecutiveFailures += 1
            status.lastError = "\(error)"
            status.state = .degraded
            maker.metrics.refillFailed(template: template.name)
            logger.info(
                "pool pass failed; retrying with backoff",
                metadata: [
                    "template": "\(template.name)", "failures": "\(status.consecutiveFailures)", "error": "\(error)",
                ])
        }
        status.passes += 1
        publish()
    }

    private func reconcileOnce() async throws {
        let fingerprint = try await maker.fingerprint(of: template)
        let store = maker.records
        let containers = try await maker.engine.listContainers(
            all: true,
            labels: [
                "\(SandboxLabels.managed)=1", "\(SandboxLabels.instance)=\(try maker.instanceID())",
                "\(SandboxLabels.pool)=\(template.name)",
            ])
        // Everything below runs without suspending until the retirements: the sets read here
        // are the ones current after the listing.
        let now = configuration.timer.now()
        let grace = maker.claimGrace.milliseconds / 1000
        var found: [Member] = []
        var retire: [(id: SandboxID, container: String, reason: String, needsMarker: Bool)] = []
        var claimed = 0
        var listedMembers: Set<SandboxID> = []
        var containerOf: [SandboxID: String] = [:]
        for summary in containers {
            guard let kind = SandboxLabels.classify(containerName: summary.name) else { continue }
            let created =
                ContainerMaker.createdDate(summary.labels) ?? Date(timeIntervalSince1970: TimeInterval(summary.created))
            switch kind {
            case .sandbox:
                if summary.state == "running" { claimed += 1 }
            case .preparing(_, let id):
                guard !preparing.contains(id) else { continue }
                // Left half-made by a process that is gone (or, when that cannot be told, older
                // than the grace period).
                let alive = summary.labels[SandboxLabels.preparer].flatMap(ProcessIdentity.isAlive)
                if alive == false || (alive == nil && now.timeIntervalSince(created) > grace) {
                    retire.append((id, summary.id, "abandoned", false))
                }
            case .member(_, let id):
                listedMembers.insert(id)
                guard !claiming.contains(id) else { continue }
                if let claimDate = store.claimDate(id) {
                    // Someone took the marker: a claim in progress elsewhere, or one abandoned.
                    let owner = store.claimOwner(id).flatMap(ProcessIdentity.isAlive)
                    if owner == false || (owner == nil && now.timeIntervalSince(claimDate) > grace) {
                        retire.append((id, summary.id, "abandoned-claim", false))
                    }
                    continue
                }
                if summary.state != "running" {
                    retire.append((id, summary.id, "dead", true))
                } else if summary.labels[SandboxLabels.templateHash] != fingerprint {
                    retire.append((id, summary.id, "template-changed", true))
                } else if let maxAge = template.pool.maxAge,
                    now.timeIntervalSince(created) >= maxAge.milliseconds / 1000
                {
                    retire.append((id, summary.id, "max-age", true))
                } else if !taken.contains(id) {
                    found.append(Member(id: id, created: created))
                    containerOf[id] = summary.id
                }
            }
        }
        let retiring = Set(retire.map(\.id))
        let foundIDs = Set(found.map(\.id))
        let known = Set(idle.map(\.id))
        idle =
            idle.filter { foundIDs.contains($0.id) && !retiring.contains($0.id) }
            + found.filter { !known.contains($0.id) }.sorted { ($0.created, $0.id) < ($1.created, $1.id) }
        // A target lowered at run time: the newest idle members past it go.
        if let targetOverride, idle.count > targetOverride {
            for member in idle.suffix(idle.count - targetOverride) {
                guard let container = containerOf[member.id] else { continue }
                retire.append((member.id, container, "surplus", true))
            }
            idle.removeLast(idle.count - targetOverride)
        }
        // Members another process made (or this one, before a restart) dial in once listened for.
        for member in idle where !known.contains(member.id) { await maker.listenControl(member.id) }
        taken.formIntersection(listedMembers)
        status.claimed = claimed
        for item in retire {
            // Retiring takes the marker like a claim, so a claimer elsewhere cannot get a
            // member that is being removed.
            if item.needsMarker, !store.takeClaim(item.id) { continue }
            taken.insert(item.id)
            await maker.discard(item.container, id: item.id)
            maker.metrics.memberRetired(template: template.name, reason: item.reason)
            logger.info(
                "pool member retired",
                metadata: ["template": "\(template.name)", "sandbox": "\(item.id)", "reason": "\(item.reason)"])
        }
        publish()
        try await refill(fingerprint: fingerprint)
    }

    /// Makes members until `min_idle` are idle or being made, within `max_total`, with at most
    /// `refill_concurrency` at once. Stops scheduling at the first failure and throws it.
    private func refill(fingerprint: String) async throws {
        let settings = template.pool
        func deficit() -> Int {
            let wanted = target - idle.count - preparing.count
            let room = settings.maxTotal - idle.count - preparing.count - status.claimed
            return max(0, min(wanted, room))
        }
        guard deficit() > 0 else { return }
        let maker = self.maker
        let template = self.template
        var failure: (any Error)?
        await withTaskGroup(of: (SandboxID, (any Error)?).self) { group in
            var running = 0
            while true {
                while failure == nil, running < settings.refillConcurrency, deficit() > 0, !Task.isCancelled {
                    let id = SandboxID.random()
                    preparing.insert(id)
                    running += 1
                    group.addTask {
                        do {
                            try await maker.makeMember(template, fingerprint: fingerprint, id: id)
                            return (id, nil)
                        } catch {
                            return (id, error)
                        }
                    }
                    publish()
                }
                guard running > 0, let (id, error) = await group.next() else { break }
                running -= 1
                preparing.remove(id)
                if let error {
                    failure = failure ?? error
                } else {
                    idle.append(Member(id: id, created: configuration.timer.now()))
                    maker.metrics.memberMade(template: template.name)
                }
                publish()
            }
        }
        if let failure { throw failure }
    }
}
