import CorralCore
import CorralHarness
import CorralHost
import CorralSession
import Foundation
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

extension CorralServer {
    /// This process's name in run leases: the host's name and the process id, which tell an
    /// operator where a run is.
    static func replicaName() -> String {
        "\(ProcessInfo.processInfo.hostName.prefix(150))-\(getpid())"
    }

    /// Claims the runs whose replicas stopped renewing their leases and wakes each here: the
    /// harness repairs what the last run left (a tool call in flight is recorded `unknown`)
    /// and goes on. A run that cannot go on here (an agent this replica has no brain key for)
    /// is ended, and says why in the log.
    func takeOverExpiredRuns(_ leases: any RunLeases) async throws {
        for claimed in try await leases.claimExpired(owner: workers.owner, ttl: workers.leaseTTL, limit: 8) {
            let harness = harness(for: claimed.tenant)
            do {
                guard let spec = try await harness.recordedSpec(claimed.session) else {
                    throw CorralError.invalidArgument("session \(claimed.session) is not an agent session")
                }
                let brain = try await makeBrain(spec.brain, tenant: claimed.tenant)
                await workers.adopt(claimed.session, tenant: claimed.tenant, epoch: claimed.epoch) {
                    try await harness.run(claimed.session, brain: brain)
                }
            } catch {
                logger.error(
                    "could not take over a harness run; it is ended",
                    metadata: ["session": "\(claimed.session)", "error": "\(error)"])
                try? await leases.release(
                    claimed.session, owner: workers.owner, epoch: claimed.epoch, handOver: false)
            }
        }
    }
}

/// With run leases, looks every half lease for runs to take over, until a graceful shutdown.
struct RunTakeoverService: Service {
    let server: CorralServer

    func run() async throws {
        guard let leases = server.workers.leases else {
            try? await gracefulShutdown()
            return
        }
        let period = server.workers.leaseTTL / 2
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                try await server.takeOverExpiredRuns(leases)
            } catch {
                server.logger.warning("could not look for runs to take over", metadata: ["error": "\(error)"])
            }
            // The lease's expiry is a time in the database: it is looked for, not signalled.
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: period) }
        }
    }
}
