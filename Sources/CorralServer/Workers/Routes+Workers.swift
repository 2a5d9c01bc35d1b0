import CorralAPI
import CorralCore
import CorralFleet
import CorralHost
import Hummingbird

extension CorralServer {
    /// `GET /v1/workers` (`corral worker ls`): the workers that dialled in, for the operator.
    func addWorkerRoutes(to group: RouterGroup<CorralRequestContext>) {
        group.get("workers") { _, context -> Response in
            guard try context.requireTenant() == .local else {
                throw CorralError(
                    .permissionDenied, "workers are the operator's to see",
                    hint: "run `corral worker ls` on the control plane's host")
            }
            return JSONResponse.make(fleet?.summaries() ?? [])
        }
    }
}
