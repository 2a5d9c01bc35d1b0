import CorralCore
import DockerEngine
import Foundation

/// What a listing or an inspection tells about a sandbox, read from the engine.
public struct SandboxInfo: Sendable, Codable, Hashable {
    public var id: SandboxID
    public var tenant: TenantID
    public var containerID: String
    public var image: String
    public var runtime: String
    /// created, running, exited, dead, ... as the engine says.
    public var state: String
    public var created: Date?
    public var expires: Date?
    public var session: SessionID?
    public var labels: [String: String]

    init?(summary: ContainerSummary) {
        guard let (tenant, id) = SandboxLabels.parse(containerName: summary.name) else { return nil }
        self.init(id: id, tenant: tenant, containerID: summary.id, image: summary.image, state: summary.state, labels: summary.labels)
    }

    init?(inspect: ContainerInspect) {
        guard let (tenant, id) = SandboxLabels.parse(containerName: inspect.name) else { return nil }
        self.init(
            id: id, tenant: tenant, containerID: inspect.id, image: inspect.config.image ?? "", state: inspect.state.status,
            labels: inspect.config.labels ?? [:])
    }

    init(id: SandboxID, tenant: TenantID, containerID: String, image: String, state: String, labels: [String: String]) {
        self.id = id
        self.tenant = tenant
        self.containerID = containerID
        self.image = image
        self.state = state
        self.runtime = labels[SandboxLabels.runtime] ?? "runc"
        self.created = labels[SandboxLabels.created].flatMap(Double.init).map { Date(timeIntervalSince1970: $0) }
        self.expires = labels[SandboxLabels.expires].flatMap(Double.init).map { Date(timeIntervalSince1970: $0) }
        self.session = labels[SandboxLabels.session].flatMap(SessionID.init)
        var user: [String: String] = [:]
        for (key, value) in labels where key.hasPrefix(SandboxLabels.userPrefix) {
            user[String(key.dropFirst(SandboxLabels.userPrefix.count))] = value
        }
        self.labels = user
    }
}
