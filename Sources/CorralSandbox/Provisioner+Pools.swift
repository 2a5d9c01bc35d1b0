import CorralCore
import DockerEngine
import Foundation

/// A container a warm pool made, and what state it is in.
public struct PoolMemberInfo: Sendable, Codable, Hashable {
    public enum State: String, Sendable, Codable, CaseIterable {
        /// Started, setup running.
        case preparing
        /// Ready to be claimed.
        case idle
        /// Being claimed (or a claim was abandoned; the pool retires it).
        case claiming
        /// Handed out to a tenant.
        case claimed
        /// Not running: the pool replaces it.
        case dead
    }

    public var id: SandboxID
    public var template: TemplateName
    public var state: State
    /// For claimed members.
    public var tenant: TenantID?
    public var containerState: String
    public var created: Date?
    public var templateHash: String?
}

extension Provisioner {
    /// Every container made by this instance's pools (all templates, or one), by state.
    public func poolMembers(template: TemplateName? = nil) async throws -> [PoolMemberInfo] {
        var labels = ["\(SandboxLabels.managed)=1", "\(SandboxLabels.instance)=\(try instanceID())"]
        labels.append(template.map { "\(SandboxLabels.pool)=\($0)" } ?? SandboxLabels.pool)
        let containers = try await engine.listContainers(all: true, labels: labels)
        let store = try records()
        return containers.compactMap { summary -> PoolMemberInfo? in
            guard let kind = SandboxLabels.classify(containerName: summary.name),
                let pool = summary.labels[SandboxLabels.pool].flatMap(TemplateName.init)
            else { return nil }
            var state: PoolMemberInfo.State
            var tenant: TenantID?
            switch kind {
            case .preparing: state = .preparing
            case .member(_, let id): state = store.claimDate(id) == nil ? .idle : .claiming
            case .sandbox(let owner, _):
                state = .claimed
                tenant = owner
            }
            if summary.state != "running", state != .claimed { state = .dead }
            return PoolMemberInfo(
                id: kind.sandboxID, template: pool, state: state, tenant: tenant, containerState: summary.state,
                created: ContainerMaker.createdDate(summary.labels),
                templateHash: summary.labels[SandboxLabels.templateHash])
        }
        .sorted { ($0.template, $0.created ?? .distantPast, $0.id) < ($1.template, $1.created ?? .distantPast, $1.id) }
    }
}

extension Provisioner {
    /// Removes idle, dead and half-made members (of one template or all); claimed sandboxes
    /// stay. Each idle member is taken like a claim first, so none is removed under a claimer.
    public func drainPools(template: TemplateName? = nil) async throws -> [SandboxID] {
        let store = try records()
        var removed: [SandboxID] = []
        for member in try await poolMembers(template: template)
        where member.state != .claimed && member.state != .claiming {
            let name: String
            if member.state == .preparing {
                name = SandboxLabels.preparingName(template: member.template, sandbox: member.id)
            } else {
                guard store.takeClaim(member.id) else { continue }
                name = SandboxLabels.memberName(template: member.template, sandbox: member.id)
            }
            await discard(name, id: member.id)
            removed.append(member.id)
        }
        return removed
    }
}
