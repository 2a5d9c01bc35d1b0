import CorralAPI
import CorralCore
import Hummingbird

/// Decides who is asking. On the unix socket in the state directory (mode 0600) every request
/// is the local tenant's; on TCP a bearer token names the tenant.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = CorralRequestContext

    enum Mode: Sendable {
        case local
        case tokens(TenantRegistry)
    }

    let mode: Mode

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var context = context
        switch mode {
        case .local:
            context.tenant = .local
        case .tokens(let registry):
            guard let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer ") else {
                throw CorralError(
                    .unauthenticated, "this request needs a bearer token",
                    hint: "send Authorization: Bearer TOKEN (corral tenant add NAME makes one)")
            }
            let token = String(header.dropFirst("bearer ".count)).trimmingCharacters(in: .whitespaces)
            guard let tenant = try registry.tenant(forToken: token) else {
                throw CorralError(
                    .unauthenticated, "the bearer token is not valid", hint: "corral tenant add NAME makes a new one")
            }
            context.tenant = tenant
        }
        return try await next(request, context)
    }
}
