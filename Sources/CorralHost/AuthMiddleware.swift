import CorralAPI
import CorralCore
import HTTPTypes
import Hummingbird

/// Decides who is asking. On the unix socket in the state directory (mode 0600) every request
/// is the local tenant's; on TCP a bearer token names the tenant; on a worker's link the control
/// plane names it (the worker dialled that control plane and verified it), for the link's epoch.
package struct AuthMiddleware: RouterMiddleware {
    package typealias Context = CorralRequestContext

    package enum Mode: Sendable {
        case local
        case tokens((any TenantTokens)?)
        case controlPlane(currentEpoch: @Sendable () -> Int64?)
    }

    package let mode: Mode

    /// On a worker's link: the epoch must be the link's current one (else 409), and the call
    /// names its tenant in `Corral-Tenant`, which the link alone may carry.
    package static func checkEpoch(_ request: Request, currentEpoch: () -> Int64?) throws {
        let presented = HTTPField.Name(WorkerProtocol.epochHeader).flatMap { request.headers[$0] }.flatMap { Int64($0) }
        guard let presented, presented == currentEpoch() else {
            throw CorralError(
                .conflict,
                "a call from a stale control-plane link (epoch \(presented.map(String.init) ?? "none")) is refused")
        }
    }

    package static func linkTenant(_ request: Request, currentEpoch: () -> Int64?) throws -> TenantID {
        try checkEpoch(request, currentEpoch: currentEpoch)
        guard let name = HTTPField.Name(WorkerProtocol.tenantHeader).flatMap({ request.headers[$0] }) else {
            throw CorralError(.unauthenticated, "a call on the worker link names no tenant")
        }
        return name == TenantID.local.rawValue ? .local : try TenantID(validating: name)
    }

    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws
        -> Response
    {
        var context = context
        switch mode {
        case .local:
            context.tenant = .local
        case .controlPlane(let currentEpoch):
            context.tenant = try Self.linkTenant(request, currentEpoch: currentEpoch)
        case .tokens(let tokens):
            guard let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer ") else {
                throw CorralError(
                    .unauthenticated, "this request needs a bearer token",
                    hint: "send Authorization: Bearer TOKEN (corral tenant add NAME makes one)")
            }
            let token = String(header.dropFirst("bearer ".count)).trimmingCharacters(in: .whitespaces)
            guard let registry = tokens else { throw invalidToken }
            switch try await registry.authenticate(token: token) {
            case .tenant(let tenant, let tokenSHA256):
                context.tenant = tenant
                context.tokenSHA256 = tokenSHA256
            case .reserved(let name):
                // A tenants.json from before names were reserved, or edited by hand: such a token
                // would act as the operator (`local`) or as a part of the system. Refused like an
                // unknown one, and logged so that the operator removes it.
                context.logger.warning(
                    "refused a bearer token stored under a reserved tenant name; remove it with `corral tenant rm`",
                    metadata: ["tenant": "\(name)", "tenants": "\(registry.location)"])
                throw invalidToken
            case .unknown:
                throw invalidToken
            }
        }
        return try await next(request, context)
    }

    package var invalidToken: CorralError {
        CorralError(.unauthenticated, "the bearer token is not valid", hint: "corral tenant add NAME makes a new one")
    }
}
