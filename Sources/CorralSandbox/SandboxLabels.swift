import CorralCore
import Foundation

/// The engine's labels are corral's record of its sandboxes: the reaper, listings and
/// lookups read them back, and corral keeps no other copy that could drift.
public enum SandboxLabels {
    public static let managed = "corral.managed"
    public static let sandbox = "corral.sandbox"
    public static let tenant = "corral.tenant"
    public static let session = "corral.session"
    public static let expires = "corral.expires"
    public static let created = "corral.created"
    public static let runtime = "corral.runtime"
    public static let pool = "corral.pool"
    /// User labels are stored under this prefix so they cannot collide with corral's.
    public static let userPrefix = "corral.label."

    /// Container names: `corral.<tenant>.<sandbox id>`. A lookup by name therefore needs the
    /// tenant, and another tenant's sandbox is as absent as a missing one.
    public static func containerName(tenant: TenantID, sandbox: SandboxID) -> String {
        "corral.\(tenant).\(sandbox)"
    }

    /// Reads tenant and id back from a container name; nil for names corral did not make.
    public static func parse(containerName name: String) -> (TenantID, SandboxID)? {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "corral", let tenant = TenantID(String(parts[1])),
            let sandbox = SandboxID(String(parts[2]))
        else { return nil }
        return (tenant, sandbox)
    }
}
