import CorralAPI
import CorralCore
import CorralHarness
import CorralSession
import Foundation

/// An agent run that happens in a corral service: the command starts (or resumes) it, then
/// prints its steps by tailing the session, as the embedded harness would have printed them.
/// The run belongs to the service: when this process goes away, the run goes on.
struct RemoteAgentRun {
    let client: CorralClient
    let printer: StepPrinter
    /// How often the follower asks whether the run is still going, to notice one that ended
    /// without `session.ended` (failed, stopped, or had nothing to do).
    var statusInterval: Duration = .seconds(1)

    /// `POST /v1/agents`, then the steps until the run ends.
    func start(_ request: StartAgentRequest) async throws {
        let status = try await client.startAgent(request)
        let session = try SessionID(validating: status.session)
        Self.printLine(session.rawValue)
        // The run's own steps start at its harness.woke; what came before is the task.
        try await follow(session, from: 1)
    }

    /// `POST /v1/sessions/{id}/harness/run`, then the steps appended from then on.
    func wake(_ session: SessionID, message: String?) async throws {
        let head = try await explainingMissingSession { try await client.session(session).head }
        do {
            _ = try await client.runHarness(session, message: message)
        } catch var error as CorralError where error.code == .conflict {
            error.hint =
                "it runs in the service already: follow it with `corral session tail \(session)`, or stop it with `corral agent stop \(session)`"
            throw error
        }
        Self.printLine(session.rawValue)
        try await follow(session, from: head + 1)
    }

    private enum Signal: Sendable {
        case event(Event)
        /// The service has no run going; `head` was read after it said so.
        case idle(HarnessStatus, head: UInt64)
        case failed(any Error)
    }

    /// Prints the run's events (from its `harness.woke` on) until `session.ended`, or until
    /// the service says the run is over and every event up to the head is printed.
    private func follow(_ session: SessionID, from: UInt64) async throws {
        let (signals, continuation) = AsyncStream<Signal>.makeStream()
        let client = self.client
        let interval = statusInterval
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    try await client.followEvents(session, from: from) { event in
                        continuation.yield(.event(event))
                        return true
                    }
                } catch {
                    continuation.yield(.failed(error))
                }
            }
            group.addTask {
                do {
                    let (status, head) = try await Self.waitUntilIdle(client, session, interval: interval)
                    continuation.yield(.idle(status, head: head))
                } catch {
                    continuation.yield(.failed(error))
                }
            }
            defer { group.cancelAll() }
            var last = from > 0 ? from - 1 : 0
            var printing = false
            var idle: (status: HarnessStatus, head: UInt64)?
            for await signal in signals {
                switch signal {
                case .event(let event):
                    last = event.seq
                    if event.type == HarnessEvent.harnessWoke { printing = true }
                    guard printing else { break }
                    printer.print(event)
                    if event.type == HarnessEvent.sessionEnded { return }
                case .idle(let status, let head):
                    idle = (status, head)
                case .failed(let error):
                    // Nothing here is cancelled before the loop is left: every failure is real.
                    throw error
                }
                if let idle, last >= idle.head {
                    try Self.finish(session, idle.status, ranHere: printing)
                    return
                }
            }
        }
    }

    /// Polls the run's status until the service has none going. A service that is briefly
    /// away (restarting) is waited for, as the event stream waits for it.
    private static func waitUntilIdle(
        _ client: CorralClient, _ session: SessionID, interval: Duration
    ) async throws -> (HarnessStatus, UInt64) {
        let patience = EventStreamOptions().reconnectFor
        var failingSince: ContinuousClock.Instant?
        while true {
            try await Task.sleep(for: interval)
            do {
                let status = try await client.harnessStatus(session)
                failingSince = nil
                if status.state != "running" { return (status, try await client.session(session).head) }
            } catch let error as CorralError where [.unavailable, .io, .timeout].contains(error.code) {
                let now = ContinuousClock.now
                if let since = failingSince, now - since > patience { throw error }
                failingSince = failingSince ?? now
            }
        }
    }

    /// The run is over without `session.ended`: say why.
    private static func finish(_ session: SessionID, _ status: HarnessStatus, ranHere: Bool) throws {
        switch status.lastOutcome {
        case "error":
            throw CorralError(
                .agentFailed, status.lastError ?? "the run of session \(session) failed",
                hint: "the session is saved: `corral agent wake \(session)` continues it")
        case "stopped":
            throw CorralError(
                .cancelled, "the run of session \(session) was stopped",
                hint: "`corral agent wake \(session)` continues it")
        case nil:
            throw CorralError(
                .agentFailed, "the service has no run of session \(session) any more (was it restarted?)",
                hint: "`corral agent wake \(session)` continues it")
        case let reason?:
            if !ranHere {
                FileHandle.standardError.write(
                    Data(
                        "corral: session \(session) has ended (\(reason)); nothing to do. Pass --message to continue it.\n"
                            .utf8))
            }
        }
    }

    static func printLine(_ text: String) {
        var out = StandardOutput()
        out.line(text)
        out.flush()
    }
}

extension CorralError.Code {
    /// An agent's run ended in an error; its session is saved and can be woken.
    static let agentFailed = CorralError.Code(rawValue: "agent_failed")
}
