import CorralAPI
import CorralCore
import CorralFleet
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

/// What a worker serves on its link: the sandboxes' routes, its pools and its status, and E2B's
/// API for its sandboxes. The control plane keeps tenants, sessions and agent runs, so a link
/// (even a compromised control plane's) cannot administer the worker's tenants or start a run
/// there, such as a scripted brain that would read a file on the worker's host.
struct WorkerLinkScope: RouterMiddleware {
    typealias Context = CorralRequestContext

    let currentEpoch: @Sendable () -> Int64?

    static let served = ["/v1/sandboxes", "/v1/pools", "/v1/worker/"]
    static let e2bControl = ["/sandboxes", "/v2/sandboxes"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let path = request.uri.path
        if Self.matches(path, Self.served) { return try await next(request, context) }
        // E2B's: its sandboxes (the tenant named by the control plane), and envd's calls for a
        // sandbox named in E2b-Sandbox-Id (its access token checked here). Both on this link's
        // epoch only.
        let corralPath = path == "/v1" || path.hasPrefix("/v1/")
        if Self.matches(path, Self.e2bControl) || (!corralPath && E2BHeaders.value(request, "e2b-sandbox-id") != nil) {
            try AuthMiddleware.checkEpoch(request, currentEpoch: currentEpoch)
            return try await next(request, context)
        }
        throw CorralError(.notFound, "a worker's link serves sandboxes, pools and status only, not \(path)")
    }

    static func matches(_ path: String, _ prefixes: [String]) -> Bool {
        prefixes.contains { path == $0 || path.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") }
    }
}
