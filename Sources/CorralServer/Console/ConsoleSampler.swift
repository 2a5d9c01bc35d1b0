import CorralCore
import CorralHost
import CorralSandbox
import CorralService
import CorralSession
import DockerEngine
import Foundation
import Logging
import ServiceLifecycle

/// Samples the pools, the provisioner's figures and the engine every `interval` for the
/// console's charts, and reads every session once at start so that the first look at the
/// session list finds its summaries ready. A service of its own, stopped with the others.
struct ConsoleSampler: Service {
    let runner: CorralServiceRunner
    let history: ConsoleHistory
    let summaries: SessionSummaries
    let sessions: (any SessionStore)?
    let interval: Duration
    let logger: Logger

    func run() async throws {
        // Ends at a graceful shutdown: the cancellation that ends the sleep is the way out,
        // not a failure (which would stop the whole service with an error).
        do {
            try await cancelWhenGracefulShutdown {
                await sample()
                await warmSummaries()
                while !Task.isCancelled {
                    try await Task.sleep(for: interval)
                    await sample()
                }
            }
        } catch is CancellationError {}
    }

    func sample() async {
        var statuses: [PoolStatus] = []
        for pool in runner.pools { statuses.append(await pool.currentStatus()) }
        history.record(pools: statuses, metrics: runner.provisioner.metrics.snapshot(), at: Date())
        let engine = runner.provisioner.engine
        let now = Date()
        // Version and host figures change rarely: asked for once a minute.
        let needsDetails = history.snapshot.engine.detailsChecked.map { now.timeIntervalSince($0) >= 60 } ?? true
        do {
            guard try await engine.ping() else { throw CorralError(.unavailable, "the engine did not answer its ping") }
            var version: EngineVersion?
            var info: EngineInfo?
            if needsDetails {
                version = try? await engine.version()
                info = try? await engine.info()
            }
            history.record { host in
                host.checked = now
                host.lastHeartbeat = now
                host.healthy = true
                host.lastError = nil
                if needsDetails { host.detailsChecked = now }
                if let version {
                    host.version = version.version
                    host.apiVersion = version.apiVersion
                }
                if let info {
                    host.operatingSystem = info.operatingSystem
                    host.cpus = info.ncpu
                    host.memory = info.memTotal
                    host.containers = info.containers
                    host.runtimes = info.runtimes.keys.sorted()
                }
            }
        } catch {
            history.record { host in
                host.checked = now
                host.healthy = false
                host.lastError = "\(error)"
            }
        }
    }

    /// Folds every session once, a session at a time, so that the first look at the list is
    /// fast. Sessions made later are summarised when first looked at.
    func warmSummaries() async {
        guard let sessions, let list = try? await sessions.list() else { return }
        for info in list where info.problem == nil {
            if Task.isCancelled { return }
            _ = try? await summaries.summary(of: info.id, head: info.head, store: sessions)
        }
        logger.debug("console summaries ready", metadata: ["sessions": "\(list.count)"])
    }
}
