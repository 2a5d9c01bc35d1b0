import CorralCore
import CorralSandbox

/// Where the session's tools run: named sandboxes ("hands"), made on first use.
///
/// The harness sees sandboxes only through this seam. `SandboxHands` backs it with
/// CorralSandbox's provisioner; warm pools (templates) and gateway workspaces (`--repo`)
/// plug in behind it without the loop changing.
public protocol HandProvisioner: Sendable {
    /// The tools a hand runs (names, schemas and which inputs are safe to repeat).
    var tools: [any SandboxTool] { get }

    /// Refuses, before anything runs, a spec this provisioner cannot honour.
    func check(_ spec: HandSpec) throws

    /// Makes a new sandbox for `request`.
    func provision(_ request: HandRequest) async throws -> ProvisionedHand

    /// A handle on a sandbox the session recorded earlier, possibly made by another process.
    /// Its first use tells whether the sandbox is still there.
    func reattach(_ sandbox: SandboxID, request: HandRequest) -> any Hand

    /// Removes a sandbox that was found lost, as far as anything of it is left.
    func discard(_ sandbox: SandboxID, request: HandRequest) async
}

/// What a named sandbox is made for.
public struct HandRequest: Sendable, Hashable {
    public var session: SessionID
    public var tenant: TenantID
    /// The sandbox's name in the session (`main` for bash and the editor).
    public var name: String
    public var spec: HandSpec

    public init(session: SessionID, tenant: TenantID = .local, name: String, spec: HandSpec) {
        self.session = session
        self.tenant = tenant
        self.name = name
        self.spec = spec
    }
}

/// A sandbox a tool call can run in.
public protocol Hand: Sendable {
    var sandboxID: SandboxID { get }
    /// execute(name, input): tool errors, a dead sandbox included, are outputs; only
    /// cancellation throws, and `HandOutcomeUnknown` when the call was sent and its answer never
    /// came (a worker's link that broke while it ran).
    func execute(tool: String, input: JSONValue) async throws -> ToolOutput
    /// Asked after an error output: is the sandbox still there and running?
    func liveness() async -> HandLiveness
}

/// A call that reached its sandbox's host and whose result was lost on the way back: it may have
/// run fully, partly or not at all. The harness records it as `unknown`, never runs it again by
/// itself, and tells the model.
public struct HandOutcomeUnknown: Error, Sendable {
    public var reason: String

    public init(reason: String) { self.reason = reason }
}

public enum HandLiveness: Sendable, Hashable {
    case running
    /// Gone or stopped: its workspace cannot be reached any more.
    case lost(reason: String)
    /// The engine could not say (it may be down).
    case unknown(reason: String)
}

/// A hand just made, and how.
public struct ProvisionedHand: Sendable {
    public var hand: any Hand
    /// `warm` or `cold`.
    public var path: String
    public var milliseconds: Double

    public init(hand: any Hand, path: String, milliseconds: Double) {
        self.hand = hand
        self.path = path
        self.milliseconds = milliseconds
    }
}
