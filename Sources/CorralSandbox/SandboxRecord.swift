import CorralCore
import CorralPolicy
import Foundation

/// What corral knows about one claimed or cold sandbox beyond its container's labels: the
/// per-session settings bound after the claim. Kept at `$STATE/sandboxes/<id>/record.json`.
///
/// The engine stays the source of truth for existence: a record without a container is
/// deleted, and a claimed container without a record (past a grace period that covers a claim
/// in progress) is an orphan and is removed.
public struct SandboxRecord: Codable, Sendable, Hashable {
    /// Format version; readers refuse versions they do not know.
    public var version: Int = SandboxRecord.currentVersion
    public var id: SandboxID
    public var tenant: TenantID
    public var session: SessionID?
    public var template: TemplateName?
    /// How the sandbox was provisioned.
    public var path: ProvisionReport.Path
    /// When its container was made (for a warm claim, earlier than `bound`).
    public var created: Date
    /// When it was claimed or handed out, and these settings bound.
    public var bound: Date
    /// Removed by the reaper at this time; nil keeps it until removed.
    public var expires: Date?
    /// Removed by the reaper once no command ran for this many seconds.
    public var idleTTLSeconds: Double?
    /// Environment added to every command (a command's own env wins).
    public var env: [String: String]
    /// The caller's own labels.
    public var labels: [String: String]
    /// What the sandbox's gateway allows (its grants and egress hosts); nil when no gateway
    /// served it. A restarted service attaches every live sandbox's gateway again from this.
    public var gateway: GatewayPolicy?
    /// The repository cloned into /workspace, with the branch it is on; nil when none.
    public var workspace: SandboxWorkspace?

    /// 2 added `gateway` and `workspace`. A version 1 record reads as one without either.
    public static let currentVersion = 2

    public init(
        id: SandboxID, tenant: TenantID, session: SessionID?, template: TemplateName?, path: ProvisionReport.Path,
        created: Date, bound: Date, expires: Date?, idleTTL: Duration?, env: [String: String], labels: [String: String],
        gateway: GatewayPolicy? = nil, workspace: SandboxWorkspace? = nil
    ) {
        self.id = id
        self.tenant = tenant
        self.session = session
        self.template = template
        self.path = path
        self.created = created
        self.bound = bound
        self.expires = expires
        self.idleTTLSeconds = idleTTL.map { $0.milliseconds / 1000 }
        self.env = env
        self.labels = labels
        self.gateway = gateway
        self.workspace = workspace
    }

    public var idleTTL: Duration? { idleTTLSeconds.map { .milliseconds(Int64(($0 * 1000).rounded())) } }
}
