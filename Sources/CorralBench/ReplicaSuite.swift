import CorralAPI
import CorralCore
import CorralSession
import CorralSessionPostgres
import Foundation
import Logging

/// Suite `replicas`: agent steps per second through the API, with one `corral serve` and with
/// two replicas over the same PostgreSQL store (CORRAL_TEST_STORE_URL), in the same run. The
/// agents are scripted, their tools are `session_events` calls (no sandbox), so what is
/// measured is the harness and the store, not the engine.
struct ReplicaSuite: BenchSuite {
    static let name = "replicas"
    static let summary = "agent steps/s through the API: one corrald against two replicas on one PostgreSQL"
    static let turns = 20

    func run(_ context: BenchContext) async throws -> SuiteReport {
        var report = SuiteReport(suite: Self.name)
        guard let base = ProcessInfo.processInfo.environment["CORRAL_TEST_STORE_URL"], !base.isEmpty else {
            report.notes.append(
                "not measured: set CORRAL_TEST_STORE_URL (scripts/postgres.sh up, then eval \"$(scripts/postgres.sh env)\")"
            )
            return report
        }
        let corral = BenchProcess.sibling("corral")
        let root = context.scratch.appendingPathComponent("replicas-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        let script = root.appendingPathComponent("agent.jsonl")
        try Data(
            (String(
                repeating: #"{"tool_calls": [{"name": "session_events", "input": {"limit": 2}}]}"# + "\n",
                count: Self.turns) + #"{"text": "Done."}"# + "\n").utf8
        ).write(to: script)
        let agents = context.quick ? 8 : 32
        let rounds = context.quick ? 1 : 3
        var measurements: [Measurement] = []
        for count in [1, 2] {
            var rates = Samples()
            for _ in 0..<rounds {
                let url = base + (base.contains("?") ? "&" : "?") + "schema=bench_r\(UInt32.random(in: 0...UInt32.max))"
                var logger = Logger(label: "corral.bench")
                logger.logLevel = .warning
                let store = try await PostgresSessionStore.connect(url: url, logger: logger)
                var processes: [ChildProcess] = []
                var states: [URL] = []
                do {
                    var clients: [CorralClient] = []
                    for index in 0..<count {
                        let state = root.appendingPathComponent("r\(index)-\(UUID().uuidString.prefix(4))")
                        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
                        states.append(state)
                        // No templates, so no warm pools: the agents need no sandbox.
                        let config = state.appendingPathComponent("corral.toml")
                        try Data("# no templates\n".utf8).write(to: config)
                        var environment = ProcessInfo.processInfo.environment
                        environment["CORRAL_ENGINE"] = context.engineEndpoint
                        environment["CORRAL_STATE_DIR"] = state.path
                        environment["CORRAL_STORE_URL"] = url
                        environment["CORRAL_CONFIG"] = config.path
                        environment["CORRAL_LOG"] = "error"
                        processes.append(
                            try BenchProcess.start(
                                corral, ["serve", "--listen", ""], environment: environment,
                                log: state.appendingPathComponent("serve.log")))
                        let socket = state.appendingPathComponent("corral.sock").path
                        try await BenchProcess.waitForSocket(socket)
                        clients.append(try CorralClient(endpoint: .unixSocket(path: socket)))
                    }
                    rates.append(try await Self.measure(agents: agents, clients: clients, store: store, script: script))
                    for client in clients { client.shutdown() }
                } catch {
                    for process in processes { BenchProcess.stop(process) }
                    await CLISuite.tearDown(service: nil, states: states, engine: context.engineEndpoint)
                    try? await store.dropSchema()
                    await store.shutdown()
                    throw error
                }
                for process in processes { BenchProcess.stop(process) }
                await CLISuite.tearDown(service: nil, states: states, engine: context.engineEndpoint)
                try? await store.dropSchema()
                await store.shutdown()
            }
            measurements.append(
                Measurement(subject: count == 1 ? "one corrald" : "two replicas", unit: "steps/s", samples: rates))
        }
        report.comparisons.append(
            Comparison(
                metric:
                    "agent steps per second through the API (\(agents) agents at once, \(Self.turns) tool turns each)",
                measurements: measurements))
        report.notes.append(
            "a step is one brain turn and its tool call, written to the store; both replicas run on this host's two cores beside PostgreSQL, so a second replica adds no CPU here: the figure shows what sharing the runs costs, not what a second host adds"
        )
        return report
    }

    /// Starts the agents round robin over the replicas and waits for every one to end: steps
    /// (brain turns) per second, from the first start to the last end.
    static func measure(agents: Int, clients: [CorralClient], store: PostgresSessionStore, script: URL) async throws
        -> Double
    {
        let clock = ContinuousClock()
        let started = clock.now
        let sessions = try await withThrowingTaskGroup(of: SessionID.self) { group in
            for index in 0..<agents {
                group.addTask {
                    let status = try await clients[index % clients.count].startAgent(
                        StartAgentRequest(task: "look at the log", brain: "scripted:\(script.path)"))
                    return try SessionID(validating: status.session)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        var steps = 0
        for session in sessions {
            var next: UInt64 = 1
            var ended = false
            let deadline = clock.now + .seconds(300)
            while !ended {
                let page = try await store.readPage(session, from: next, limit: nil)
                for event in page.events {
                    if event.type == "brain.response" { steps += 1 }
                    if event.type == "session.ended" { ended = true }
                }
                next = (page.events.last?.seq ?? next - 1) + 1
                if !ended {
                    guard clock.now < deadline else {
                        throw CorralError(.timeout, "agent session \(session) did not end within 300 s")
                    }
                    _ = try await store.waitForHead(session, beyond: next - 1)
                }
            }
        }
        return Double(steps) / ((clock.now - started).benchMilliseconds / 1000)
    }
}
