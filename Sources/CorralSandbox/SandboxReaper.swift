import CorralCore
import DockerEngine
import Foundation
import Logging

/// Removes what should not be there: sandboxes past their ttl or idle ttl, claimed containers
/// without a record (orphans), records without a container, pool members of templates no
/// longer configured, and gateway sockets of sandboxes that are gone. Whatever it removes, it
/// detaches from the gateway.
///
/// A long-running service (`run()`), or one `sweep()` at a time. It reads everything from the
/// engine and the records each time, so it adopts whatever an earlier process left.
public actor SandboxReaper {
    public struct Configuration: Sendable {
        /// Time between sweeps.
        public var interval: Duration = .seconds(30)
        public var timer: ServiceTimer = .system
        /// The templates the service runs pools of: members of any other template are removed.
        /// nil leaves every pool member alone.
        public var templates: Set<TemplateName>?

        public init() {}
    }

    /// What one sweep removed, by reason: `expired`, `idle`, `orphan`, `unknown-template`,
    /// `stale-record`.
    public struct Sweep: Sendable, Hashable {
        public var removed: [SandboxID: String] = [:]
    }

    let provisioner: Provisioner
    let configuration: Configuration
    let logger: Logger

    public init(provisioner: Provisioner, configuration: Configuration = Configuration(), logger: Logger? = nil) {
        self.provisioner = provisioner
        self.configuration = configuration
        self.logger = logger ?? Logger(label: "corral.reaper")
    }

    /// Sweeps until cancelled. A failed sweep (the engine is out) is retried at the next one.
    public func run() async throws {
        while !Task.isCancelled {
            do {
                _ = try await sweep()
            } catch is CancellationError {
                break
            } catch {
                logger.info("reaper sweep failed", metadata: ["error": "\(error)"])
            }
            do {
                try await configuration.timer.sleep(for: configuration.interval)
            } catch {
                break
            }
        }
    }

    /// One sweep.
    public func sweep() async throws -> Sweep {
        let store = try provisioner.records()
        let instance = try provisioner.instanceID()
        // Directories first: a record made after the listing belongs to a container the
        // listing may not show yet.
        let directories = store.ids()
        // Sockets attached before the listing belong to containers made before it: one the
        // listing lacks is gone (a socket attached later may be a sandbox still being made).
        let attached = provisioner.configuration.gateway?.attachedSandboxes ?? []
        let listening = provisioner.control?.listening ?? []
        let listedAt = Date()
        let containers = try await provisioner.engine.listContainers(
            all: true, labels: ["\(SandboxLabels.managed)=1", "\(SandboxLabels.instance)=\(instance)"])
        let now = configuration.timer.now()
        let grace = provisioner.configuration.claimGrace.milliseconds / 1000
        var sweep = Sweep()
        var present: Set<SandboxID> = []
        for summary in containers {
            guard let kind = SandboxLabels.classify(containerName: summary.name) else { continue }
            present.insert(kind.sandboxID)
            switch kind {
            case .sandbox(_, let id):
                guard let reason = try reason(toRemove: id, summary: summary, store: store, now: now, grace: grace)
                else {
                    continue
                }
                await remove(id, container: summary.id, reason: reason, into: &sweep)
            case .member(let template, let id), .preparing(let template, let id):
                guard let templates = configuration.templates, !templates.contains(template) else { continue }
                if case .member = kind, !store.takeClaim(id) { continue }
                await remove(id, container: summary.id, reason: "unknown-template", into: &sweep)
            }
        }
        // Records and directories whose container is gone. A directory younger than the grace
        // period may belong to a sandbox being made right now.
        for id in directories where !present.contains(id) && !provisioner.isMaking(id) {
            let made = store.directoryDate(id) ?? .distantPast
            // A record is written only once its container exists: one bound before the listing
            // whose container the listing lacks is stale for sure.
            let bound = (try? store.read(id))?.bound
            guard now.timeIntervalSince(made) > grace || bound.map({ $0 < listedAt }) == true else { continue }
            provisioner.configuration.gateway?.detach(sandbox: id)
            store.remove(id)
            sweep.removed[id] = "stale-record"
        }
        for id in listening where !present.contains(id) {
            provisioner.control?.close(id)
        }
        for id in attached where !present.contains(id) {
            provisioner.configuration.gateway?.detach(sandbox: id)
            logger.info("gateway socket of a vanished sandbox closed", metadata: ["sandbox": "\(id)"])
        }
        return sweep
    }

    private func reason(
        toRemove id: SandboxID, summary: ContainerSummary, store: SandboxRecordStore, now: Date, grace: Double
    ) throws -> String? {
        let record: SandboxRecord?
        do {
            record = try store.read(id)
        } catch {
            // An unreadable record is not a missing one: leave the sandbox, say so.
            logger.info("sandbox record unreadable", metadata: ["sandbox": "\(id)", "error": "\(error)"])
            return nil
        }
        guard let record else {
            // Claimed (or made) but never bound: an orphan once its claimer is gone.
            if let owner = store.claimOwner(id).flatMap(ProcessIdentity.isAlive) {
                return owner ? nil : "orphan"
            }
            // Made cold by a process that died before binding it (kill -9 mid-create): gone at
            // once, not a grace later.
            if store.claimOwner(id) == nil, ContainerMaker.makerIsDead(summary.labels) { return "orphan" }
            let since =
                store.claimDate(id) ?? store.directoryDate(id) ?? ContainerMaker.createdDate(summary.labels)
                ?? .distantPast
            // Being made by this process right now: its heartbeat may run late on a loaded
            // machine, but it is no orphan. (Another process's is judged by the heartbeat.)
            if provisioner.isMaking(id) { return nil }
            return now.timeIntervalSince(since) > grace ? "orphan" : nil
        }
        if let expires = record.expires, expires <= now { return "expired" }
        if let idleTTL = record.idleTTL {
            let last = max(record.bound, store.lastActivity(id) ?? record.bound)
            if now.timeIntervalSince(last) >= idleTTL.milliseconds / 1000 { return "idle" }
        }
        return nil
    }

    private func remove(_ id: SandboxID, container: String, reason: String, into sweep: inout Sweep) async {
        do {
            try await provisioner.engine.removeContainer(container, force: true, volumes: true)
        } catch {
            logger.info("reaper could not remove a sandbox", metadata: ["sandbox": "\(id)", "error": "\(error)"])
            return
        }
        provisioner.configuration.gateway?.detach(sandbox: id)
        try? provisioner.records().remove(id)
        sweep.removed[id] = reason
        provisioner.metrics.reaped(reason: reason)
        logger.info("sandbox reaped", metadata: ["sandbox": "\(id)", "reason": "\(reason)"])
    }
}
