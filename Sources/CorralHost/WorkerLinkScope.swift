import CorralCore
import Hummingbird

/// What a worker serves on its link: the sandboxes' routes, its pools and its status, and E2B's
/// API for its sandboxes. The control plane keeps tenants, sessions and agent runs, so a link
/// (even a compromised control plane's) cannot administer the worker's tenants or start a run
/// there, such as a scripted brain that would read a file on the worker's host.
package struct WorkerLinkScope: RouterMiddleware {
    package typealias Context = CorralRequestContext

    package let currentEpoch: @Sendable () -> Int64?

    package static let served = ["/v1/sandboxes", "/v1/pools", "/v1/worker/"]
    package static let e2bControl = ["/sandboxes", "/v2/sandboxes"]

    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws
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

    package static func matches(_ path: String, _ prefixes: [String]) -> Bool {
        prefixes.contains { path == $0 || path.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") }
    }
}
