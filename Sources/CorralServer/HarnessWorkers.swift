import CorralAPI
import CorralCore
import CorralHarness
import CorralSession
import Logging
import ServiceLifecycle

/// The harness runs the service carries, one task per session. A run holds no state of its
/// own: stopping it (or a shutdown, or a crash) leaves the session resumable, and the next
/// run (here or in any other process) continues from the log.
actor HarnessWorkers {
    private struct Run {
        var task: Task<Void, Never>
        var token: Int
        var tenant: TenantID
    }

    private var running: [SessionID: Run] = [:]
    private var outcomes: [SessionID: (outcome: String, error: String?)] = [:]
    private var nextToken = 0
    private var accepting = true
    let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    /// Starts `body` as the session's run; a run already going is a conflict.
    func start(
        _ session: SessionID, tenant: TenantID, _ body: @escaping @Sendable () async throws -> RunOutcome
    ) throws {
        guard accepting else {
            throw CorralError(.unavailable, "the service is shutting down", hint: "try again once it is back")
        }
        guard running[session] == nil else {
            throw CorralError(
                .conflict, "session \(session) is running already",
                hint: "stop it first: POST /v1/sessions/\(session)/harness/stop")
        }
        nextToken += 1
        let token = nextToken
        let task = Task {
            let result: (String, String?)
            do {
                result = (try await body().reason, nil)
            } catch is CancellationError {
                result = ("stopped", nil)
            } catch let error as CorralError where error.code == .cancelled {
                result = ("stopped", nil)
            } catch {
                result = ("error", "\(error)")
            }
            self.finished(session, token: token, outcome: result.0, error: result.1)
        }
        running[session] = Run(task: task, token: token, tenant: tenant)
    }

    private func finished(_ session: SessionID, token: Int, outcome: String, error: String?) {
        guard running[session]?.token == token else { return }
        running[session] = nil
        outcomes[session] = (outcome, error)
        logger.info("harness run ended", metadata: ["session": "\(session)", "outcome": "\(outcome)"])
    }

    /// Stops the session's run; false when none was running.
    func stop(_ session: SessionID) async -> Bool {
        guard let run = running[session] else { return false }
        run.task.cancel()
        await run.task.value
        return true
    }

    func status(_ session: SessionID) -> HarnessStatus {
        let last = outcomes[session]
        return HarnessStatus(
            session: session.rawValue, state: running[session] == nil ? "idle" : "running", lastOutcome: last?.outcome,
            lastError: last?.error)
    }

    /// Stops every run of one tenant (it is being removed) and waits for them to end.
    func stopAll(of tenant: TenantID) async {
        let runs = running.values.filter { $0.tenant == tenant }.map(\.task)
        for task in runs { task.cancel() }
        for task in runs { await task.value }
    }

    /// Refuses new runs and stops every running one; each session stays resumable.
    func stopAll() async {
        accepting = false
        let runs = running.values.map(\.task)
        for task in runs { task.cancel() }
        for task in runs { await task.value }
    }

    var count: Int { running.count }

    /// The tenant of each run going on (the console counts them per tenant).
    var runningTenants: [TenantID] { running.values.map(\.tenant) }
}

/// The workers as a service: on graceful shutdown, every run is stopped (after the listeners
/// stopped taking requests) so that no session is left half-way in this process.
struct HarnessWorkersService: Service {
    let workers: HarnessWorkers

    func run() async throws {
        try? await gracefulShutdown()
        await workers.stopAll()
    }
}
