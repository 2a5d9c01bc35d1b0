import CorralAPI
import CorralCore
import CorralLink
import CorralSandbox
import CorralService
import Foundation
import Logging
import Synchronization

/// The control plane's view of its workers: who is connected, what each offers (from its last
/// heartbeat), and which worker runs which sandbox. Every worker's state comes from the worker
/// itself: a corrald that restarts learns the sandboxes again from the first heartbeat of each
/// worker that reconnects.
public final class WorkerFleet: Sendable {
    public struct Settings: Sendable {
        /// Time between heartbeats (the control plane asks each worker for its status).
        public var heartbeat: Duration = .seconds(5)
        /// A worker silent this long is lost: its sandboxes are given up.
        public var grace: Duration = .seconds(30)
        /// Placement samples this many workers and takes the one with the most free room.
        public var sample = 3
        /// The group of the service's own engine host (the in-process worker); nil: the service
        /// runs no sandboxes of its own.
        public var localGroup: String? = WorkerGroup.defaultName
        /// The sandboxes the service's own engine host takes, for placement's free room.
        public var localMaxSandboxes = 64
        /// Idle members each group keeps of a template (`[[workers.pools]]`), split among the
        /// group's connected workers that offer it and pushed to them.
        public var pools: [CorralConfiguration.GroupPoolTarget] = []

        public init() {}
    }

    package struct Member: Sendable {
        package var name: String
        package var group: String
        package var version: String
        package var protocolVersion: Int
        package var epoch: Int64
        package var address: String?
        package var connected: Date
        /// When this link was taken: a worker never heard from is lost this long after.
        package var attached: ContinuousClock.Instant = .now
        package var link: WorkerLinkClient
        package var lastHeartbeat: ContinuousClock.Instant?
        package var lastHeartbeatDate: Date?
        package var status: WorkerStatus?
        /// When the link was seen closed; nil while it is up.
        package var linkLost: ContinuousClock.Instant?
        /// The pool targets this link last took; nil: none pushed yet.
        package var pushedPools: [String: Int]?
        /// The replica list this link last took; nil: none pushed yet.
        package var pushedReplicas: [WorkerReplica]?
    }

    private struct State {
        package var members: [String: Member] = [:]
        /// Which worker runs each sandbox, and whose it is (for quotas across the fleet).
        package var placements: [SandboxID: (worker: String, tenant: TenantID)] = [:]
        /// When the control plane placed each sandbox it created on a worker: a heartbeat
        /// taken before then may not list it yet.
        package var placedAt: [SandboxID: ContinuousClock.Instant] = [:]
        /// Sandboxes on a worker that was lost: removed when that worker comes back.
        package var abandoned: [String: Set<SandboxID>] = [:]
        package var lastEpoch: Int64 = 0
        /// The replicas that share the store (`ReplicaDirectory`), fresh ones only; nil: this
        /// control plane is the only one (or has not published yet).
        package var replicas: [ReplicaDirectory.Entry]?
    }

    public let settings: Settings
    private let state = Mutex(State())
    /// When this control plane began following workers: for a grace after it, a sandbox no
    /// worker has reported may still be on one whose first heartbeat has not come yet.
    package let started = ContinuousClock.now
    /// Callers of `settledRoute` waiting for the next heartbeat.
    private let heartbeatWaiters = Mutex<[UUID: CheckedContinuation<Void, Never>]>([:])
    /// The groups a tenant's sandboxes may run in: a worker's heartbeat places only the
    /// sandboxes of tenants its group serves, so that a worker cannot claim another's.
    package let groupsOf: @Sendable (TenantID) async -> [String]
    package let logger: Logger
    /// This control plane's name among the replicas that share its store.
    package let replica: String

    public init(
        settings: Settings = Settings(), logger: Logger, replica: String = "local",
        groupsOf: @escaping @Sendable (TenantID) async -> [String] = { _ in [WorkerGroup.defaultName] }
    ) {
        self.settings = settings
        self.logger = logger
        self.replica = replica
        self.groupsOf = groupsOf
    }

    // MARK: Links

    /// A new epoch: above every earlier one of this process and of earlier processes (it starts
    /// from the clock in milliseconds), so that a worker can tell a stale caller from this one.
    package func nextEpoch() -> Int64 {
        state.withLock { state in
            state.lastEpoch = max(state.lastEpoch + 1, Int64(Date().timeIntervalSince1970 * 1000))
            return state.lastEpoch
        }
    }

    /// The group a worker of this name joined before, if one did: a name stays in its group, so
    /// that another group's worker cannot take over its link and its sandboxes' calls.
    package func group(ofWorker name: String) -> String? {
        state.withLock { $0.members[name]?.group }
    }

    /// Takes a worker's new link; an older link of the same name is closed (its calls end).
    package func attach(_ member: Member) {
        let replaced = state.withLock { state -> Member? in
            let old = state.members[member.name]
            state.members[member.name] = member
            return old
        }
        if let replaced, replaced.epoch != member.epoch { replaced.link.close() }
        logger.info(
            "worker connected",
            metadata: [
                "worker": "\(member.name)", "group": "\(member.group)", "epoch": "\(member.epoch)",
                "address": "\(member.address ?? "?")",
            ])
    }

    /// Closes every link: this process stops taking calls for its workers.
    package func closeAll() {
        for member in state.withLock({ Array($0.members.values) }) { member.link.close() }
    }

    /// Heartbeats for one link until it closes: the first at once, so that placement knows the
    /// worker before its first call. Before each, `tokenKept` says whether the worker's token
    /// is still kept: a revoked token's link is closed (the worker's next dial is refused).
    package func followHeartbeats(name: String, epoch: Int64, tokenKept: @Sendable () async -> Bool = { true }) async {
        while !Task.isCancelled {
            guard let member = state.withLock({ $0.members[name] }), member.epoch == epoch else { return }
            guard await tokenKept() else {
                logger.warning(
                    "worker token revoked: closing the worker's link",
                    metadata: ["worker": "\(name)", "epoch": "\(epoch)"])
                member.link.close()
                return
            }
            guard member.link.isActive else {
                state.withLock { state in
                    if state.members[name]?.epoch == epoch, state.members[name]?.linkLost == nil {
                        state.members[name]?.linkLost = .now
                    }
                }
                logger.warning("worker link closed", metadata: ["worker": "\(name)", "epoch": "\(epoch)"])
                return
            }
            do {
                // A worker that takes no call (it stopped reading, or speaks no HTTP/2) loses its
                // link at the grace: the calls on it end with the link's error.
                let status = try await Self.answer(within: settings.grace) {
                    try await member.link.get("/v1/worker/status", as: WorkerStatus.self)
                } onLate: { [logger, grace = settings.grace] in
                    logger.warning(
                        "worker did not answer its heartbeat within the grace: closing its link",
                        metadata: ["worker": "\(name)", "grace": "\(grace)"])
                    member.link.close()
                }
                if let status { await received(status, from: name, epoch: epoch) }
            } catch {
                logger.warning("worker heartbeat failed", metadata: ["worker": "\(name)", "error": "\(error)"])
            }
            await pushPoolTargets(to: name, epoch: epoch)
            await pushReplicas(to: name, epoch: epoch)
            try? await Task.sleep(for: settings.heartbeat)
        }
    }

    private func received(_ status: WorkerStatus, from name: String, epoch: Int64) async {
        // Only sandboxes of tenants this worker's group serves, and none another worker holds.
        let group = state.withLock { $0.members[name]?.group }
        var claimable: Set<SandboxID> = []
        if let group {
            var groupsByTenant: [TenantID: [String]] = [:]
            for sandbox in status.sandboxes {
                if groupsByTenant[sandbox.tenant] == nil {
                    groupsByTenant[sandbox.tenant] = await groupsOf(sandbox.tenant)
                }
                if groupsByTenant[sandbox.tenant]?.contains(group) == true { claimable.insert(sandbox.id) }
            }
        }
        if claimable.count < status.sandboxes.count {
            logger.warning(
                "a worker listed sandboxes of tenants outside its group; they are not routed to it",
                metadata: ["worker": "\(name)", "ignored": "\(status.sandboxes.count - claimable.count)"])
        }
        let (abandoned, link) = state.withLock { state -> ([WorkerSandbox], WorkerLinkClient?) in
            guard state.members[name]?.epoch == epoch else { return ([], nil) }
            state.members[name]?.status = status
            state.members[name]?.lastHeartbeat = .now
            state.members[name]?.lastHeartbeatDate = Date()
            let given = state.abandoned[name] ?? []
            var abandoned: [WorkerSandbox] = []
            for sandbox in status.sandboxes where claimable.contains(sandbox.id) {
                if given.contains(sandbox.id) {
                    abandoned.append(sandbox)
                } else if let holder = state.placements[sandbox.id]?.worker, holder != name,
                    state.members[holder]?.link.isActive == true
                {
                    continue
                } else {
                    state.placements[sandbox.id] = (name, sandbox.tenant)
                }
            }
            // Sandboxes the worker no longer runs (removed there: its reaper, an idle or E2B
            // timeout) are forgotten, so that quotas do not count them; one placed so recently
            // that this heartbeat may predate it stays until the next.
            let listed = Set(status.sandboxes.map(\.id))
            let settled = ContinuousClock.now - (settings.heartbeat * 2 + .seconds(10))
            for (id, placement) in state.placements
            where placement.worker == name && !listed.contains(id) && (state.placedAt[id] ?? settled) <= settled {
                state.placements[id] = nil
                state.placedAt[id] = nil
            }
            return (abandoned, state.members[name]?.link)
        }
        for waiter in heartbeatWaiters.withLock({ waiters in
            defer { waiters = [:] }
            return Array(waiters.values)
        }) {
            waiter.resume()
        }
        // A worker that comes back after it was lost: what the control plane gave up on goes.
        guard let link else { return }
        for sandbox in abandoned {
            do {
                try await link.removeSandbox(sandbox)
                _ = state.withLock { $0.abandoned[name]?.remove(sandbox.id) }
                logger.info(
                    "removed a sandbox given up while its worker was lost",
                    metadata: ["worker": "\(name)", "sandbox": "\(sandbox.id)"])
            } catch {
                logger.warning(
                    "could not remove a sandbox given up while its worker was lost",
                    metadata: ["worker": "\(name)", "sandbox": "\(sandbox.id)", "error": "\(error)"])
            }
        }
    }

    /// `body`'s answer, or nil when it takes longer than `limit`: then `onLate` runs (it should
    /// make `body` end, as closing a link does) and `body` is cancelled.
    package static func answer<T: Sendable>(
        within limit: Duration, _ body: @escaping @Sendable () async throws -> T,
        onLate: @escaping @Sendable () -> Void
    ) async throws -> T? {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: limit)
                onLate()
                return nil
            }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
    }

    // MARK: Pool targets

    /// This worker's share of its group's pool targets: the group's connected workers that offer
    /// a template split its target in name order, the first ones taking one more when it does
    /// not divide. nil when the group has no targets.
    package func poolShares(of name: String, now: ContinuousClock.Instant = .now) -> [String: Int]? {
        state.withLock { state in
            guard let member = state.members[name] else { return nil }
            let wanted = settings.pools.filter { $0.group == member.group }
            guard !wanted.isEmpty else { return nil }
            var shares: [String: Int] = [:]
            for target in wanted {
                let offering = state.members.values.filter { other in
                    other.group == member.group && other.link.isActive && other.linkLost == nil
                        && !Self.isLost(other, now: now, grace: settings.grace)
                        && other.status?.templates.contains(target.template) == true
                }.map(\.name).sorted()
                guard let index = offering.firstIndex(of: name) else { continue }
                shares[target.template] =
                    target.minIdle / offering.count + (index < target.minIdle % offering.count ? 1 : 0)
            }
            return shares
        }
    }

    /// Sends a worker its share of the pool targets when it changed (a worker joined or left
    /// the group, or this link is new). A failed push is tried again at the next heartbeat.
    package func pushPoolTargets(to name: String, epoch: Int64) async {
        guard let shares = poolShares(of: name),
            let link = state.withLock({ state in
                state.members[name].flatMap { $0.epoch == epoch && $0.pushedPools != shares ? $0.link : nil }
            })
        else { return }
        let body = WorkerPoolTargets(
            targets: shares.sorted { $0.key < $1.key }.map { WorkerPoolTarget(template: $0.key, minIdle: $0.value) })
        do {
            _ = try await link.send(.put, "/v1/worker/pools", json: body, as: [WorkerPoolStatus].self)
            state.withLock { state in
                if state.members[name]?.epoch == epoch { state.members[name]?.pushedPools = shares }
            }
            logger.info(
                "worker pool targets set",
                metadata: [
                    "worker": "\(name)",
                    "targets": "\(body.targets.map { "\($0.template)=\($0.minIdle)" }.joined(separator: ","))",
                ])
        } catch {
            logger.warning(
                "could not set a worker's pool targets", metadata: ["worker": "\(name)", "error": "\(error)"])
        }
    }

    // MARK: Replicas

    /// Takes the replicas' directory as this replica last published to it: the list its
    /// workers are told to dial, and who else hears from which worker.
    package func took(directory entries: [ReplicaDirectory.Entry]) {
        state.withLock { $0.replicas = entries }
    }

    /// The workers whose links to this replica are up, for its directory entry.
    package func linkedWorkers() -> [String] {
        state.withLock { state in
            state.members.values.filter { $0.link.isActive && $0.linkLost == nil }.map(\.name).sorted()
        }
    }

    /// Whether another replica's fresh entry says that worker `name`'s link to it is up.
    private func isHeardElsewhere(_ name: String, state: State) -> Bool {
        state.replicas?.contains { $0.id != replica && $0.workers.contains(name) } ?? false
    }

    /// Tells a worker every replica it should keep a link to, when the list changed for this
    /// link. Without a directory (one control plane) nothing is sent.
    package func pushReplicas(to name: String, epoch: Int64) async {
        guard
            let (link, list) = state.withLock({ state -> (WorkerLinkClient, [WorkerReplica])? in
                guard let entries = state.replicas, let member = state.members[name], member.epoch == epoch else {
                    return nil
                }
                let list = entries.compactMap { entry in entry.url.map { WorkerReplica(id: entry.id, url: $0) } }
                return member.pushedReplicas == list ? nil : (member.link, list)
            })
        else { return }
        do {
            _ = try await link.send(
                .put, "/v1/worker/replicas", json: WorkerReplicas(replicas: list), as: WorkerReplicas.self)
            state.withLock { state in
                if state.members[name]?.epoch == epoch { state.members[name]?.pushedReplicas = list }
            }
            logger.info(
                "worker told the replicas", metadata: ["worker": "\(name)", "replicas": "\(list.map(\.id))"])
        } catch {
            logger.warning(
                "could not tell a worker the replicas", metadata: ["worker": "\(name)", "error": "\(error)"])
        }
    }

    /// The worker that holds `tenant`'s sandbox `id`, asked of the links of the tenant's groups:
    /// for an id this replica has not heard of (another replica created it a moment ago, or
    /// this one started since). The worker's answer is recorded as a placement.
    package func locate(_ id: SandboxID, tenant: TenantID) async -> Route? {
        let groups = await groupsOf(tenant)
        let links = links(in: groups)
        guard !links.isEmpty else { return nil }
        let found = await withTaskGroup(of: (String, WorkerLinkClient)?.self) { group -> (String, WorkerLinkClient)? in
            for (name, link) in links {
                group.addTask { () -> (String, WorkerLinkClient)? in
                    let info = try? await link.get("/v1/sandboxes/\(id)", as: SandboxInfo.self, tenant: tenant)
                    return info == nil ? nil : (name, link)
                }
            }
            for await answer in group {
                if let answer {
                    group.cancelAll()
                    return answer
                }
            }
            return nil
        }
        guard let (name, link) = found else { return nil }
        state.withLock { state in
            if state.placements[id] == nil { state.placements[id] = (name, tenant) }
        }
        return .worker(name: name, link: link)
    }

    /// Marks workers silent past the grace as lost; their sandboxes are given up. Called before
    /// every placement and listing, so no timer is needed for correctness. A worker another
    /// replica still hears from keeps its sandboxes: calls for them here answer 503 (`down`)
    /// until its link here is back, or the others lose it too.
    package func expireLost(now: ContinuousClock.Instant = .now) {
        let silent = state.withLock { state -> [WorkerLinkClient] in
            var silent: [WorkerLinkClient] = []
            for (name, member) in state.members where Self.isLost(member, now: now, grace: settings.grace) {
                // A link that is up but answers no heartbeat: its calls end now, with an error.
                if member.link.isActive { silent.append(member.link) }
                guard !isHeardElsewhere(name, state: state) else { continue }
                let mine = state.placements.filter { $0.value.worker == name }.map(\.key)
                guard !mine.isEmpty else { continue }
                for id in mine {
                    state.placements[id] = nil
                    state.placedAt[id] = nil
                }
                state.abandoned[name, default: []].formUnion(mine)
                logger.warning(
                    "worker lost: its sandboxes are given up",
                    metadata: ["worker": "\(name)", "sandboxes": "\(mine.count)"])
            }
            return silent
        }
        for link in silent { link.close() }
    }

    package static func isLost(_ member: Member, now: ContinuousClock.Instant, grace: Duration) -> Bool {
        now - (member.lastHeartbeat ?? member.attached) > grace
    }

    // MARK: Sandboxes

    /// Where a call for a sandbox goes.
    package enum Route: Sendable {
        /// The service's own engine host.
        case local
        case worker(name: String, link: WorkerLinkClient)
        /// On a worker whose link is down, within the grace: a retry may reach it.
        case down(worker: String)
        /// On a worker that was lost: the sandbox is given up.
        case lost(worker: String)
    }

    package func route(_ id: SandboxID) -> Route {
        expireLost()
        return state.withLock { state in
            if let name = state.abandoned.first(where: { $0.value.contains(id) })?.key { return .lost(worker: name) }
            guard let name = state.placements[id]?.worker, let member = state.members[name] else { return .local }
            guard member.link.isActive else { return .down(worker: name) }
            return .worker(name: name, link: member.link)
        }
    }

    /// Whether this control plane started less than a grace ago: its workers may not all have
    /// dialled it again and sent their first heartbeat (a restart keeps nothing in memory).
    package var isWarmingUp: Bool { ContinuousClock.now - started < settings.grace }

    /// `id`'s route, waiting while this control plane is warming up and no worker has reported
    /// `id`: for a sandbox this host does not hold, so that a restart does not make a worker's
    /// sandbox look gone.
    package func settledRoute(_ id: SandboxID) async -> Route {
        var route = route(id)
        while case .local = route, isWarmingUp, !Task.isCancelled {
            await nextHeartbeat(before: started + settings.grace)
            route = self.route(id)
        }
        return route
    }

    /// Returns when a worker's heartbeat has been taken in, or at `deadline` (the warm-up's
    /// end: time is the subject there), whichever is first.
    func nextHeartbeat(before deadline: ContinuousClock.Instant) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in await waitForHeartbeat() }
            group.addTask { try? await Task.sleep(until: deadline) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForHeartbeat() async {
        let key = UUID()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let cancelled = heartbeatWaiters.withLock { waiters -> Bool in
                    guard !Task.isCancelled else { return true }
                    waiters[key] = continuation
                    return false
                }
                if cancelled { continuation.resume() }
            }
        } onCancel: {
            heartbeatWaiters.withLock { $0.removeValue(forKey: key) }?.resume()
        }
    }

    /// The answer for a call for sandbox `id`, which this host does not hold and no worker has
    /// reported, while this control plane warms up: try again, not "not found".
    package func notYetKnown(_ id: SandboxID) -> CorralError {
        let elapsed = Int((ContinuousClock.now - started).components.seconds)
        var error = CorralError(
            .unavailable,
            "sandbox \(id) is not known here yet: this control plane started \(elapsed)s ago, and a worker that holds it may not have reported since",
            hint: "try again in a few seconds; workers report their sandboxes in their first heartbeat")
        error.retryAfterSeconds = 2
        return error
    }

    /// What a call for sandbox `id` gets when its worker is down or lost; nil otherwise.
    package func unreachable(_ id: SandboxID, _ route: Route) -> CorralError? {
        let grace = Int(settings.grace.components.seconds)
        switch route {
        case .lost(let name):
            return CorralError(
                .unavailable,
                "sandbox \(id) ran on worker '\(name)', which is lost (silent past the \(grace)s grace); its files are gone",
                hint: "create a new sandbox")
        case .down(let name):
            var error = CorralError(
                .unavailable, "sandbox \(id) runs on worker '\(name)', whose link is down",
                hint: "the worker reconnects by itself; a worker silent for \(grace)s is lost")
            error.retryAfterSeconds = 2
            return error
        case .local, .worker:
            return nil
        }
    }

    /// Whether the control plane gave sandbox `id` up (its worker was lost).
    package func isAbandoned(_ id: SandboxID) -> Bool {
        state.withLock { $0.abandoned.values.contains { $0.contains(id) } }
    }

    package func recordPlacement(_ id: SandboxID, on worker: String, tenant: TenantID) {
        state.withLock { state in
            state.placements[id] = (worker, tenant)
            state.placedAt[id] = .now
        }
    }

    /// Whose sandbox `id` on a worker is.
    package func tenant(of id: SandboxID) -> TenantID? {
        state.withLock { $0.placements[id]?.tenant }
    }

    package func forget(_ id: SandboxID) {
        state.withLock { state in
            state.placements[id] = nil
            state.placedAt[id] = nil
        }
    }

    /// The ids of `tenant`'s sandboxes on workers.
    package func sandboxes(of tenant: TenantID) -> [SandboxID] {
        expireLost()
        return state.withLock { $0.placements.filter { $0.value.tenant == tenant }.map(\.key) }
    }

    /// The sandboxes `tenant` holds on workers (a lost worker's are given up and not counted).
    package func count(of tenant: TenantID) -> Int {
        expireLost()
        return state.withLock { $0.placements.values.filter { $0.tenant == tenant }.count }
    }

    /// How many sandboxes each tenant holds on workers (a lost worker's are not counted).
    package func counts() -> [TenantID: Int] {
        expireLost()
        return state.withLock { state in
            state.placements.values.reduce(into: [:]) { counts, placement in counts[placement.tenant, default: 0] += 1 }
        }
    }

    /// `tenant`'s sandboxes on workers as they are now: each worker of `groups` (the tenant's)
    /// whose link is up is asked for its own listing, and the others count from their last
    /// heartbeat. For quotas across replicas, where a heartbeat may not list yet what another
    /// replica made a moment ago; only a worker of the tenant's groups can get a new one.
    package func liveCount(of tenant: TenantID, groups: [String]) async -> Int {
        expireLost()
        let (links, views) = state.withLock { state -> ([(String, WorkerLinkClient)], [String: Int]) in
            let views = state.placements.values.filter { $0.tenant == tenant }
                .reduce(into: [String: Int]()) { $0[$1.worker, default: 0] += 1 }
            let up = state.members.values.filter {
                groups.contains($0.group) && $0.link.isActive && $0.linkLost == nil
            }
            return (up.map { ($0.name, $0.link) }, views)
        }
        let asked = await withTaskGroup(of: (String, Int?).self) { group -> [String: Int] in
            for (name, link) in links {
                group.addTask {
                    (name, try? await link.get("/v1/sandboxes", as: [SandboxInfo].self, tenant: tenant).count)
                }
            }
            var asked: [String: Int] = [:]
            for await (name, count) in group { asked[name] = count }
            return asked
        }
        let names = Set(views.keys).union(asked.keys)
        return names.reduce(0) { total, name in total + (asked[name] ?? views[name] ?? 0) }
    }

    /// The tenants with sandboxes on worker `name`: by its last heartbeat, and those the
    /// control plane placed there since.
    package func tenants(on name: String) -> Set<TenantID> {
        state.withLock { state in
            Set((state.members[name]?.status?.sandboxes.map(\.tenant) ?? []))
                .union(state.placements.values.filter { $0.worker == name }.map(\.tenant))
        }
    }

    package func links(in groups: [String]?) -> [(name: String, link: WorkerLinkClient)] {
        expireLost()
        return state.withLock { state in
            state.members.values.filter { (groups?.contains($0.group) ?? true) && $0.link.isActive }
                .sorted { $0.name < $1.name }.map { ($0.name, $0.link) }
        }
    }

    // MARK: Placement

    /// Where a new sandbox of `template` for a tenant of `groups` goes: a warm member first (the
    /// local pool's, then a worker's), else the best of `sample` workers drawn at random, by free
    /// room. `localWarm` and `localFree` describe the service's own engine host.
    package func place(
        groups: [String], template: String?, localWarm: Bool, localFree: Double,
        using generator: inout some RandomNumberGenerator
    ) throws -> Route {
        expireLost()
        let localCandidate = settings.localGroup.map { groups.contains($0) } ?? false
        if localCandidate, localWarm { return .local }
        let candidates = state.withLock { state in
            state.members.values.filter { member in
                guard groups.contains(member.group), member.link.isActive, member.linkLost == nil,
                    let status = member.status
                else { return false }
                if let template { return status.templates.contains(template) }
                return true
            }
        }
        if let template,
            let warm = candidates.filter({ member in
                member.status?.pools.contains { $0.template == template && $0.ready > 0 } == true
            }).max(by: { Self.freeRoom($0) < Self.freeRoom($1) })
        {
            return .worker(name: warm.name, link: warm.link)
        }
        var options: [(route: Route, free: Double)] = candidates.map {
            (.worker(name: $0.name, link: $0.link), Self.freeRoom($0))
        }
        if localCandidate { options.append((.local, localFree)) }
        guard !options.isEmpty else {
            throw CorralError(
                .unavailable,
                "no worker of group \(groups.joined(separator: ", ")) is connected"
                    + (template.map { " with template '\($0)'" } ?? ""),
                hint: "start `corral worker --group \(groups[0])` on an engine host, or check `corral worker ls`")
        }
        guard let best = Self.bestOfSample(options, sample: settings.sample, free: { $0.free }, using: &generator),
            best.free > 0
        else {
            throw CorralError(
                .resourceExhausted, "every worker of group \(groups.joined(separator: ", ")) is full",
                hint: "remove sandboxes, or add workers")
        }
        return best.route
    }

    /// Placement's choice: `sample` of `options` drawn at random (all of them when there are
    /// fewer), and the one with the most free room. The `fleet` bench measures `sample` with
    /// this function (`PlacementSimulation`).
    package static func bestOfSample<Option>(
        _ options: [Option], sample: Int, free: (Option) -> Double, using generator: inout some RandomNumberGenerator
    ) -> Option? {
        var options = options
        options.shuffle(using: &generator)
        return options.prefix(max(1, sample)).max { free($0) < free($1) }
    }

    /// Free room as a fraction of the worker's sandboxes: 1 empty, 0 full.
    package static func freeRoom(_ member: Member) -> Double {
        guard let status = member.status, status.capacity.maxSandboxes > 0 else { return 0 }
        return Double(status.capacity.maxSandboxes - status.sandboxes.count) / Double(status.capacity.maxSandboxes)
    }

    // MARK: Listing

    public func summaries() -> [WorkerSummary] {
        expireLost()
        let now = ContinuousClock.now
        return state.withLock { state in
            state.members.values.sorted { $0.name < $1.name }.map { member in
                let lost = Self.isLost(member, now: now, grace: settings.grace)
                let up = member.link.isActive && member.linkLost == nil
                return WorkerSummary(
                    name: member.name, group: member.group,
                    state: lost ? "lost" : up ? "connected" : "unreachable", version: member.version,
                    protocol: member.protocolVersion, epoch: member.epoch, address: member.address,
                    connected: member.connected, lastHeartbeat: member.lastHeartbeatDate,
                    capacity: member.status?.capacity, sandboxes: member.status?.sandboxes.count ?? 0,
                    templates: member.status?.templates ?? [], pools: member.status?.pools ?? [])
            }
        }
    }
}
