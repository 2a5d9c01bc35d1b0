import CorralCore
import CorralHost

/// Who looks at the console: the operator sees every tenant's sessions, sandboxes and the
/// tenants themselves; a tenant sees its own things only, and anything else is as absent as
/// a missing one (the same 404 page).
enum ConsoleViewer: Sendable, Hashable {
    case `operator`
    case tenant(TenantID)

    var isOperator: Bool { self == .operator }

    /// Whether something owned by `owner` may be shown.
    func sees(_ owner: TenantID) -> Bool {
        switch self {
        case .operator: true
        case .tenant(let tenant): tenant == owner
        }
    }

    /// The tenant whose things a listing is limited to; nil: all of them.
    var onlyTenant: TenantID? {
        switch self {
        case .operator: nil
        case .tenant(let tenant): tenant
        }
    }

    /// As the page header shows it.
    var name: String {
        switch self {
        case .operator: "operator"
        case .tenant(let tenant): tenant.rawValue
        }
    }
}

/// A request's viewer, and the token its forms must carry (nil on the unix socket, where no
/// cookie is involved and forms come from no browser).
struct ConsoleAccess: Sendable {
    var viewer: ConsoleViewer
    var csrf: String?
}
