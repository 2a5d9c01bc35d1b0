import CorralCore
import CorralHost
import CorralSession
import ServiceLifecycle

/// Keeps this replica's sandbox counts fresh in the store the replicas share
/// (`SandboxTallies`), three times per freshness window, so that the others' quota checks count
/// them: those on its own engine (each replica asks the workers for theirs). Without a shared
/// store it ends at once. A replica that stops stops refreshing, and its counts stop counting once they are
/// older than the window.
struct SandboxTallyService: Service {
    let server: CorralServer

    func run() async throws {
        let quotas = server.quotas
        guard let tallies = quotas.tallies else {
            try? await gracefulShutdown()
            return
        }
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                try await tallies.refresh(replica: quotas.replica, counts: server.publishedSandboxCounts())
            } catch {
                server.logger.warning(
                    "could not publish this replica's sandbox counts", metadata: ["error": "\(error)"])
            }
            // Freshness is a time in the database: it is kept up, not signalled.
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: quotas.freshWithin / 3) }
        }
    }
}

extension CorralServer {
    /// What this replica publishes of each tenant with a token (`QuotaGate.published`): the
    /// sandboxes on this host's engine.
    func publishedSandboxCounts() async throws -> [TenantID: Int] {
        var counts: [TenantID: Int] = [:]
        for info in try await provisioner.list(tenant: nil) { counts[info.tenant, default: 0] += 1 }
        counts[.local] = nil
        return counts
    }
}
