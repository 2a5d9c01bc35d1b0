import CorralCore
import CorralGateway
import CorralSession
import Logging

/// Turns the gateway's decisions into session events: a sandbox that belongs to a session
/// gets one `gateway.decision` event per decision, appended under the session's current
/// lease, as a writer beside the harness.
///
/// The event holds what the decision holds (action, verdict, target, reason, the vault
/// credential's name), which never includes a token. Appends return once the event is
/// written, with the fsync shared in a short group-commit window, so a git request does not
/// wait for the disk. A failed append is logged and dropped: the gateway's answer to the
/// sandbox never depends on it, and the decision's log line stays.
public struct SessionGatewayEvents: GatewayEventSink {
    public static let eventType = "gateway.decision"

    let store: any SessionStore
    let durability: Durability
    let logger: Logger

    public init(
        store: any SessionStore, durability: Durability = .groupCommit(maxDelay: .milliseconds(20)),
        logger: Logger = Logger(label: "corral.gateway")
    ) {
        self.store = store
        self.durability = durability
        self.logger = logger
    }

    public func record(_ decision: GatewayDecision, sandbox: SandboxID, session: SessionID?) async {
        guard let session else { return }
        let event = NewEvent(type: Self.eventType, data: Self.data(decision, sandbox: sandbox))
        // A wake between reading the lease and appending makes the lease stale: read it again
        // once. Appends without an expected seq never conflict otherwise.
        for attempt in 1...2 {
            do {
                let lease = try await store.currentLease(session)
                _ = try await store.append(session, [event], expectedSeq: nil, lease: lease, durability: durability)
                return
            } catch let error as CorralError where error.code == .conflict && attempt == 1 {
                continue
            } catch {
                logger.info(
                    "gateway decision not appended to its session",
                    metadata: ["session": "\(session)", "sandbox": "\(sandbox)", "error": "\(error)"])
                return
            }
        }
    }

    /// `{sandbox, action, verdict, target, reason[, credential]}`.
    static func data(_ decision: GatewayDecision, sandbox: SandboxID) -> JSONValue {
        var fields: [String: JSONValue] = [
            "sandbox": .string(sandbox.rawValue), "action": .string(decision.action.rawValue),
            "verdict": .string(decision.verdict.rawValue), "target": .string(decision.target),
            "reason": .string(decision.reason),
        ]
        if let credential = decision.credential { fields["credential"] = .string(credential) }
        return .object(fields)
    }
}
