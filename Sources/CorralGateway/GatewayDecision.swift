import CorralCore

/// One thing the gateway allowed or refused, for logs and session events.
///
/// Holds names, never secrets: the credential appears by its vault name only, and reasons
/// are written by the gateway itself, not copied from upstream answers.
public struct GatewayDecision: Sendable, Hashable, Codable, CustomStringConvertible {
    public enum Action: String, Sendable, Hashable, Codable {
        /// info/refs or upload-pack: clone and fetch.
        case gitFetch = "git.fetch"
        /// info/refs for receive-pack, or receive-pack itself.
        case gitPush = "git.push"
        /// A plain HTTP request or a CONNECT tunnel to another host.
        case egress
        /// A connection refused because the sandbox holds too many already.
        case connectionLimit = "connection.limit"
        /// A request the gateway could not read.
        case badRequest = "bad.request"
    }

    public enum Verdict: String, Sendable, Hashable, Codable {
        case allowed
        case denied
    }

    public var action: Action
    public var verdict: Verdict
    /// `HOST/OWNER/REPO` for git, `host:port` for egress, empty when unknown.
    public var target: String
    /// Why, in a sentence; for pushes, which refs.
    public var reason: String
    /// The vault credential used, by name.
    public var credential: String?

    public init(action: Action, verdict: Verdict, target: String, reason: String, credential: String? = nil) {
        self.action = action
        self.verdict = verdict
        self.target = target
        self.reason = reason
        self.credential = credential
    }

    public var description: String {
        var text = "\(verdict) \(action.rawValue) \(target): \(reason)"
        if let credential { text += " (credential \(credential))" }
        return text
    }
}

/// Receives every gateway decision for a sandbox, for example to append it to the sandbox's
/// session as an event. Called on the connection's task: a slow sink slows only that sandbox.
public protocol GatewayEventSink: Sendable {
    func record(_ decision: GatewayDecision, sandbox: SandboxID, session: SessionID?) async
}
