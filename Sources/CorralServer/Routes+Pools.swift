import CorralAPI
import CorralCore
import CorralSandbox
import Hummingbird

extension CorralServer {
    func addPoolRoutes(to group: RouterGroup<CorralRequestContext>) {
        group.get("pools") { _, _ -> Response in
            var statuses: [PoolStatus] = []
            for pool in runner.pools { statuses.append(await pool.currentStatus()) }
            return JSONResponse.make(statuses)
        }
    }
}
