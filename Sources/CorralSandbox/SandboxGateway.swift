import CorralCore
import CorralPolicy
import Foundation

/// What provisioning needs of the gateway: a socket per sandbox, bound in the sandbox's own
/// gateway directory under a policy, and closed again.
///
/// A seam of two calls rather than the `Gateway` itself, in the spirit of the exec transport:
/// the gateway runs in the long-running service, and a provisioner in another process (the
/// command line, a second host) can be given one that asks that service to attach, without
/// provisioning changing. In this process it is `Gateway` (the conformance is in CorralService, which links both).
public protocol SandboxGateway: Sendable {
    /// Serves the socket in `directory` for `sandbox` under `policy`. Throws when the sandbox
    /// is attached already or the gateway has stopped.
    func attach(sandbox: SandboxID, tenant: TenantID, session: SessionID?, directory: URL, policy: GatewayPolicy)
        async throws

    /// Closes the sandbox's socket and its connections; nothing happens when none is open.
    func detach(sandbox: SandboxID)

    /// The sandboxes with an open socket.
    var attachedSandboxes: [SandboxID] { get }

    /// Refuses, before anything is made or cloned, a policy the gateway would refuse `tenant`
    /// anyway (a pushable branch the operator does not allow it, a repository host or egress
    /// address it may not reach), with `.permissionDenied` naming the rule. `sandbox` is nil
    /// while the sandbox's id is not known yet.
    func admit(tenant: TenantID, sandbox: SandboxID?, policy: GatewayPolicy) async throws
}
