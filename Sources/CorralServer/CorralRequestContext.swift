import CorralCore
import Hummingbird

/// Per-request state: who is asking. The auth middleware sets `tenant`; routes under /v1
/// read it through `requireTenant()`.
public struct CorralRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var tenant: TenantID?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        tenant = nil
    }

    /// JSON bodies; archives stream through without this limit (they have their own).
    public var maxUploadSize: Int { 1 << 20 }

    func requireTenant() throws -> TenantID {
        guard let tenant else { throw CorralError(.unauthenticated, "no tenant for this request") }
        return tenant
    }
}
