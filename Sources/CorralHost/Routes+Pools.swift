import CorralAPI
import CorralCore
import CorralSandbox
import Hummingbird

extension HostAPI {
    package func addPoolRoutes(to group: RouterGroup<CorralRequestContext>) {
        // The local tenant (the operator) sees the pools as they are. A network tenant sees
        // what is its own business: how many members wait per template, and how many of the
        // pool's sandboxes it holds itself; never other tenants' counts, the host's name, the
        // service's pid, or the pool's last error (which may name host paths).
        group.get("pools") { _, context -> Response in
            let tenant = try context.requireTenant()
            var statuses: [PoolStatus] = []
            for pool in pools { statuses.append(await pool.currentStatus()) }
            guard tenant != .local else { return JSONResponse.make(statuses) }
            // Without the engine the pools still answer (they report themselves degraded).
            let mine = (try? await provisioner.list(tenant: tenant)) ?? []
            return JSONResponse.make(
                statuses.map { status in
                    var status = status
                    status.claimed = mine.filter { $0.template == status.template }.count
                    status.owner = ""
                    status.lastError = nil
                    return status
                })
        }
    }
}
