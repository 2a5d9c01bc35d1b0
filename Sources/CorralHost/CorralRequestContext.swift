import CorralCore
import Hummingbird
import NIOCore

/// Per-request state: who is asking. The auth middleware sets `tenant`; routes under /v1
/// read it through `requireTenant()`.
public struct CorralRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var tenant: TenantID?
    /// The hash of the token the tenant presented (nil on the unix socket): a route that made
    /// something checks with it that the tenant was not removed meanwhile.
    public var tokenSHA256: String?
    /// The connection the request came on (nil in the router tests): long work stops when the
    /// client goes away.
    package let channel: (any Channel)?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        tenant = nil
        tokenSHA256 = nil
        channel = source.channel
    }

    /// JSON bodies; archives stream through without this limit (they have their own).
    public var maxUploadSize: Int { 1 << 20 }

    package func requireTenant() throws -> TenantID {
        guard let tenant else { throw CorralError(.unauthenticated, "no tenant for this request") }
        return tenant
    }
}
