import CorralAPI
import Hummingbird

extension CorralServer {
    /// `GET /v1/workers` (`corral worker ls`): the workers that dialled in, for the operator.
    func addWorkerRoutes(to group: RouterGroup<CorralRequestContext>) {
        group.get("workers") { _, context -> Response in
            try requireOperator(context)
            return JSONResponse.make(fleet?.summaries() ?? [])
        }
    }
}
