import CorralCore
import Foundation

/// Labels and names: the engine's record of corral's containers. Labels are fixed when a
/// container is made, so they hold only template-level facts; whatever is per session (tenant
/// aside, which is in the name) lives in the host-side `SandboxRecord`.
public enum SandboxLabels {
    public static let managed = "corral.managed"
    public static let sandbox = "corral.sandbox"
    public static let created = "corral.created"
    public static let runtime = "corral.runtime"
    /// Which corral state directory made the container. Listings, claims, adoption and the
    /// reaper see only their own instance, so two corral installations (or two test runs) on
    /// one engine never claim or reap each other's containers.
    public static let instance = "corral.instance"
    /// The template a pool member (or a cold sandbox from a template) was made from.
    public static let template = "corral.template"
    /// The template's fingerprint (its settings and the image id) when the container was made:
    /// a member whose fingerprint differs from the template's current one is recycled.
    public static let templateHash = "corral.template-hash"
    /// The process making a pool member (see `ProcessIdentity`): a member left half-made by a
    /// process that died is removed at once.
    public static let preparer = "corral.preparer"
    /// Set on containers a warm pool made; it stays after the claim.
    public static let pool = "corral.pool"

    /// Claimed and cold sandboxes: `corral.<tenant>.<sandbox id>`. A lookup by name therefore
    /// needs the tenant, and another tenant's sandbox is as absent as a missing one.
    public static func containerName(tenant: TenantID, sandbox: SandboxID) -> String {
        "corral.\(tenant).\(sandbox)"
    }

    /// An idle pool member, ready to be claimed: `corral-pool.<template>.<sandbox id>`.
    public static func memberName(template: TemplateName, sandbox: SandboxID) -> String {
        "corral-pool.\(template).\(sandbox)"
    }

    /// A pool member still being made (started, setup running): `corral-prep.<template>.<id>`.
    /// Claimers never see it; it is renamed to the member name once it is ready.
    public static func preparingName(template: TemplateName, sandbox: SandboxID) -> String {
        "corral-prep.\(template).\(sandbox)"
    }

    /// Reads tenant and id back from a claimed or cold sandbox's name; nil for other names.
    public static func parse(containerName name: String) -> (TenantID, SandboxID)? {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "corral", let tenant = TenantID(String(parts[1])),
            let sandbox = SandboxID(String(parts[2]))
        else { return nil }
        return (tenant, sandbox)
    }

    /// What a container name says about the container.
    public enum NameKind: Sendable, Hashable {
        case sandbox(TenantID, SandboxID)
        case member(TemplateName, SandboxID)
        case preparing(TemplateName, SandboxID)

        public var sandboxID: SandboxID {
            switch self {
            case .sandbox(_, let id), .member(_, let id), .preparing(_, let id): id
            }
        }
    }

    /// Any name corral gives a container; nil for names it did not make.
    public static func classify(containerName name: String) -> NameKind? {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let sandbox = SandboxID(String(parts[2])) else { return nil }
        switch parts[0] {
        case "corral":
            return TenantID(String(parts[1])).map { .sandbox($0, sandbox) }
        case "corral-pool":
            return TemplateName(String(parts[1])).map { .member($0, sandbox) }
        case "corral-prep":
            return TemplateName(String(parts[1])).map { .preparing($0, sandbox) }
        default:
            return nil
        }
    }
}
