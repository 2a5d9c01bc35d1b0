import CorralCore
import CorralSandbox
import Synchronization

/// Hands backed by CorralSandbox: each named sandbox is a hardened container on the engine,
/// labelled with the session and its name, with a ttl so that one orphaned by a crash
/// between provisioning and recording it is reaped.
///
/// Wired: the image or a template (claimed from its warm pool), a repository cloned into
/// /workspace through the gateway (when the provisioner has one), the ttl, labels, reattaching
/// by id, and finding lost sandboxes.
public final class SandboxHands: HandProvisioner {
    public struct Configuration: Sendable {
        public var image: String = ProvisionRequest.defaultImage
        public var runtime: SandboxRuntime = .runc
        public var resources = SandboxResources()
        /// How long a session's sandbox lives before the reaper may remove it.
        public var ttl: Duration? = .seconds(12 * 3600)
        public var labels: [String: String] = [:]

        public init() {}
    }

    public let configuration: Configuration
    private let makeProvisioner: @Sendable () throws -> Provisioner
    private let cached = Mutex<Provisioner?>(nil)

    /// `provisioner` is called once, on the first use: a session whose brain never calls a
    /// sandbox tool never reaches the engine.
    public init(
        configuration: Configuration = Configuration(), provisioner: @escaping @Sendable () throws -> Provisioner
    ) {
        self.configuration = configuration
        self.makeProvisioner = provisioner
    }

    public var tools: [any SandboxTool] { [BashTool(), TextEditorTool()] }

    /// Refuses, before a session is made, what provisioning could not do: a template the
    /// provisioner does not know, or a repository with no gateway to reach it (only a running
    /// service has one).
    public func check(_ spec: HandSpec) throws {
        if let template = spec.template {
            let name = try TemplateName(validating: template)
            guard try provisioner().configuration.template(named: name) != nil else {
                throw CorralError(
                    .notFound, "no template '\(template)' in the configuration",
                    hint: "define it in corral.toml ([[templates]]), or leave out --template")
            }
        }
        if let repo = spec.repo {
            _ = try SandboxWorkspace(repository: repo)
            guard try provisioner().configuration.gateway != nil else {
                throw CorralError(
                    .unavailable, "a repository workspace needs the gateway, and no corral service is running",
                    hint: "start one with `corral serve`; corral then sends the agent through it")
            }
        }
    }

    func provisioner() throws -> Provisioner {
        try cached.withLock { cached in
            if let cached { return cached }
            let made = try makeProvisioner()
            cached = made
            return made
        }
    }

    public func provision(_ request: HandRequest) async throws -> ProvisionedHand {
        try check(request.spec)
        let sandbox = try await provisioner().provision(try provisionRequest(for: request))
        return ProvisionedHand(
            hand: SandboxHand(sandbox: sandbox), path: sandbox.provisioning?.path.rawValue ?? "cold",
            milliseconds: sandbox.provisioning?.totalMilliseconds ?? 0)
    }

    /// What `provision` asks the provisioner for: also what a hand on a worker is made from.
    public func provisionRequest(for request: HandRequest) throws -> ProvisionRequest {
        var provision = ProvisionRequest(image: configuration.image)
        if let template = request.spec.template {
            // The template fixes image, runtime and limits, and claims from its warm pool.
            provision.template = try TemplateName(validating: template)
        } else {
            provision.runtime = configuration.runtime
            provision.resources = configuration.resources
        }
        provision.ttl = configuration.ttl
        provision.labels = configuration.labels
        provision.labels["hand"] = request.name
        if let repo = request.spec.repo {
            // Writable: the grant still lets the agent push only its own branch.
            provision.workspace = try SandboxWorkspace(repository: repo, write: true)
        }
        provision.tenant = request.tenant
        provision.session = request.session
        return provision
    }

    public func reattach(_ sandbox: SandboxID, request: HandRequest) -> any Hand {
        do {
            return SandboxHand(sandbox: try provisioner().handle(sandbox, tenant: request.tenant))
        } catch {
            return UnreachableHand(sandboxID: sandbox, reason: "\(error)")
        }
    }

    public func discard(_ sandbox: SandboxID, request: HandRequest) async {
        try? await provisioner().remove(sandbox, tenant: request.tenant)
    }
}

struct SandboxHand: Hand {
    let sandbox: Sandbox
    var sandboxID: SandboxID { sandbox.id }

    func execute(tool: String, input: JSONValue) async throws -> ToolOutput {
        try await sandbox.execute(tool: tool, input: input)
    }

    func liveness() async -> HandLiveness {
        do {
            let info = try await sandbox.info()
            return info.state == "running" ? .running : .lost(reason: "its container is \(info.state)")
        } catch let error as CorralError where error.code == .notFound {
            return .lost(reason: "its container no longer exists")
        } catch {
            return .unknown(reason: "\(error)")
        }
    }
}

/// A hand whose provisioner could not be made (no engine configuration): every call says why.
struct UnreachableHand: Hand {
    let sandboxID: SandboxID
    let reason: String

    func execute(tool: String, input: JSONValue) async throws -> ToolOutput {
        .error("sandbox \(sandboxID) cannot be reached: \(reason)")
    }

    func liveness() async -> HandLiveness { .unknown(reason: reason) }
}
