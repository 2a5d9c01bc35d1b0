import CorralAPI
import CorralCore
import CorralHarness
import CorralHost
import CorralSession
import Logging
import ServiceLifecycle

/// The harness runs the service carries, one task per session. A run holds no state of its
/// own: stopping it (or a shutdown, or a crash) leaves the session resumable, and the next
/// run (here or in any other process) continues from the log.
///
/// With run leases (replicas over one PostgreSQL store), a run is this replica's only while
/// it holds the session's lease: it is claimed before the run starts, renewed every third of
/// its time to live, and given up when the run ends. A renewal that finds the lease taken,
/// or a stop asked through another replica, cancels the run here. `RunTakeover` claims the
/// runs of replicas that stopped renewing.
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
    let leases: (any RunLeases)?
    /// This replica's name in the leases.
    let owner: String
    let leaseTTL: Duration

    init(logger: Logger, leases: (any RunLeases)? = nil, owner: String = "local", leaseTTL: Duration = .seconds(30)) {
        self.logger = logger
        self.leases = leases
        self.owner = owner
        self.leaseTTL = leaseTTL
    }

    /// Starts `body` as the session's run; a run already going (here, or on another replica
    /// whose lease is live) is a conflict.
    func start(
        _ session: SessionID, tenant: TenantID, _ body: @escaping @Sendable () async throws -> RunOutcome
    ) async throws {
        try checkStartable(session)
        var epoch: Int64?
        if let leases {
            switch try await leases.claim(session, tenant: tenant, owner: owner, ttl: leaseTTL) {
            case .granted(let granted): epoch = granted
            case .held(let holder):
                throw CorralError(
                    .conflict, "session \(session) is running already, on replica \(holder)",
                    hint: "stop it first: POST /v1/sessions/\(session)/harness/stop")
            }
            // Another start of the same session here may have come first while this one waited.
            do {
                try checkStartable(session)
            } catch {
                if let epoch { try? await leases.release(session, owner: owner, epoch: epoch, handOver: false) }
                throw error
            }
        }
        launch(session, tenant: tenant, epoch: epoch, body)
    }

    /// Runs `body` for a session whose lease this replica has just taken over.
    func adopt(
        _ session: SessionID, tenant: TenantID, epoch: Int64, _ body: @escaping @Sendable () async throws -> RunOutcome
    ) async {
        guard accepting, running[session] == nil else {
            try? await leases?.release(session, owner: owner, epoch: epoch, handOver: accepting == false)
            return
        }
        logger.notice("took over a harness run whose replica stopped renewing it", metadata: ["session": "\(session)"])
        launch(session, tenant: tenant, epoch: epoch, body)
    }

    private func checkStartable(_ session: SessionID) throws {
        guard accepting else {
            throw CorralError(.unavailable, "the service is shutting down", hint: "try again once it is back")
        }
        guard running[session] == nil else {
            throw CorralError(
                .conflict, "session \(session) is running already",
                hint: "stop it first: POST /v1/sessions/\(session)/harness/stop")
        }
    }

    private func launch(
        _ session: SessionID, tenant: TenantID, epoch: Int64?, _ body: @escaping @Sendable () async throws -> RunOutcome
    ) {
        nextToken += 1
        let token = nextToken
        let (leases, owner, ttl, logger) = (self.leases, self.owner, self.leaseTTL, self.logger)
        let task = Task {
            var result: (String, String?)
            var lost = false
            do {
                if let leases, let epoch {
                    (result, lost) = try await Self.underLease(
                        session, epoch: epoch, leases: leases, owner: owner, ttl: ttl, logger: logger, body)
                } else {
                    result = (try await body().reason, nil)
                }
            } catch is CancellationError {
                result = ("stopped", nil)
            } catch let error as CorralError where error.code == .cancelled {
                result = ("stopped", nil)
            } catch {
                result = ("error", "\(error)")
            }
            if let leases, let epoch, !lost {
                // Given up whole unless this replica is going away mid-run: then another takes it now.
                let handOver = result.0 == "stopped" && !self.accepting
                do {
                    try await leases.release(session, owner: owner, epoch: epoch, handOver: handOver)
                } catch {
                    logger.warning(
                        "could not release a run's lease; it expires by itself",
                        metadata: ["session": "\(session)", "error": "\(error)"])
                }
            }
            self.finished(session, token: token, outcome: lost ? "taken over" : result.0, error: result.1)
        }
        running[session] = Run(task: task, token: token, tenant: tenant)
    }

    /// Runs `body` while renewing the lease; ends it when the lease is lost or a stop is asked.
    /// Returns the outcome, and whether the lease was lost (then it is not released).
    private static func underLease(
        _ session: SessionID, epoch: Int64, leases: any RunLeases, owner: String, ttl: Duration, logger: Logger,
        _ body: @escaping @Sendable () async throws -> RunOutcome
    ) async throws -> ((String, String?), Bool) {
        enum Ending: Sendable {
            case finished(RunOutcome)
            case lost
            case stopRequested
        }
        return try await withThrowingTaskGroup(of: Ending.self) { group in
            group.addTask { .finished(try await body()) }
            group.addTask {
                while true {
                    try await Task.sleep(for: ttl / 3)
                    do {
                        switch try await leases.renew(session, owner: owner, epoch: epoch, ttl: ttl) {
                        case .renewed: continue
                        case .stopRequested: return .stopRequested
                        case .lost: return .lost
                        }
                    } catch let error as CorralError where error.code != .cancelled {
                        // The store is away: the run's own writes fail too. Renewal goes on.
                        logger.warning(
                            "could not renew a run's lease", metadata: ["session": "\(session)", "error": "\(error)"])
                    }
                }
            }
            defer { group.cancelAll() }
            switch try await group.next() {
            case .finished(let outcome): return ((outcome.reason, nil), false)
            case .stopRequested: return (("stopped", nil), false)
            case .lost:
                logger.warning(
                    "another replica took this session's run over: stopped here", metadata: ["session": "\(session)"])
                return (("taken over", nil), true)
            case nil: throw CancellationError()
            }
        }
    }

    private func finished(_ session: SessionID, token: Int, outcome: String, error: String?) {
        guard running[session]?.token == token else { return }
        running[session] = nil
        outcomes[session] = (outcome, error)
        logger.info("harness run ended", metadata: ["session": "\(session)", "outcome": "\(outcome)"])
    }

    /// Stops the session's run, here or (with leases) on the replica that runs it, which stops
    /// it at its next renewal; false when none was running.
    func stop(_ session: SessionID) async -> Bool {
        guard let run = running[session] else {
            guard let leases else { return false }
            return ((try? await leases.requestStop(session)) ?? nil) != nil
        }
        run.task.cancel()
        await run.task.value
        return true
    }

    func status(_ session: SessionID) async -> HarnessStatus {
        let last = outcomes[session]
        var status = HarnessStatus(
            session: session.rawValue, state: running[session] == nil ? "idle" : "running", lastOutcome: last?.outcome,
            lastError: last?.error)
        if running[session] != nil {
            status.replica = leases == nil ? nil : owner
        } else if let leases, let lease = try? await leases.lease(session), lease.state != .ended, !lease.expired {
            status.state = lease.state.rawValue
            status.replica = lease.owner
        }
        return status
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
