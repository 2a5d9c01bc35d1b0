import CorralCore
import CorralHarness
import CorralSandbox
import CorralSession
import Foundation
import Logging
import Synchronization

/// The harness's own cost, beside the session store doing the same writes and reads bare.
///
/// - Overhead per tool step: the wall time between the brain's answer and the next brain
///   call, less the tool's own time (and any compaction's brain time). The brain and the
///   tool are in-process and instant, so what is left is the harness: three appends with
///   fdatasync (brain.response, tool.intent, tool.result), routing, folding the events into
///   its state, the limit and budget checks, and building the next request. Peer: the same
///   three appends, fsync each, by a bare loop on the same store.
/// - Wake: from `Harness.run` on a new store to the moment the brain is asked for the next
///   turn (new lease, state rebuilt from the log back to its latest compaction, harness.woke
///   durable). Peer: a new store's wake plus a read of every event, what a harness that
///   replays the whole log would do at least.
struct HarnessSuite: BenchSuite {
    static let name = "harness"
    static let summary = "harness overhead per tool step and wake time, beside bare session-store appends and reads"

    func run(_ context: BenchContext) async throws -> SuiteReport {
        let root = context.scratch.appendingPathComponent("harness", isDirectory: true)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        var report = SuiteReport(suite: Self.name)
        let steps = context.quick ? 200 : 2_000
        report.notes.append(
            "scratch \(root.path); \(steps) tool steps; brain and tools in-process and instant; context budget 120k tokens"
        )

        // Overhead per tool step. fdatasync latency here drifts by several times within
        // minutes, so the harness and the bare loop take turns, a round each.
        let store = FileSessionStore(directory: root.appendingPathComponent("steps", isDirectory: true))
        let rounds = 10
        var overhead = Samples()
        var bare = Samples()
        var compactions = 0
        for _ in 0..<rounds {
            let (samples, compacted) = try await Self.stepOverhead(store: store, steps: steps / rounds)
            for value in samples.values { overhead.append(value) }
            compactions += compacted
            for value in try await Self.bareStepAppends(store: store, steps: steps / rounds).values {
                bare.append(value)
            }
        }
        report.comparisons.append(
            Comparison(
                metric: "overhead per tool step (brain and tool time excluded)",
                measurements: [
                    Measurement(subject: "corral harness", unit: "ms", samples: overhead),
                    Measurement(subject: "bare store: the same 3 appends, fsync each", unit: "ms", samples: bare),
                ],
                targets: [
                    TargetCheck(
                        target: "p50 <= 2 ms", observed: String(format: "p50 %.3f ms", overhead.median),
                        met: overhead.median <= 2)
                ]))
        report.notes.append(
            "overhead: \(rounds) rounds of \(steps / rounds) steps, each a new session, alternating with the bare loop; \(compactions) compactions"
        )

        // Wake time by session size.
        let sizes = context.quick ? [100, 10_000] : [100, 10_000, 100_000]
        let wakes = context.quick ? 5 : 15
        for size in sizes {
            let directory = root.appendingPathComponent("wake-\(size)", isDirectory: true)
            let (id, built) = try await SessionGenerator.build(directory: directory, events: size)
            sync()
            var harnessWakes = Samples()
            var bareWakes = Samples()
            for _ in 0..<wakes {
                harnessWakes.append(try await Self.harnessWake(directory: directory, session: id))
                bareWakes.append(try await Self.bareWakeAndReadAll(directory: directory, session: id))
            }
            let label = size >= 1000 ? "\(size / 1000)k" : "\(size)"
            var targets: [TargetCheck] = []
            if size >= 100_000 {
                targets.append(
                    TargetCheck(
                        target: "<= 100 ms",
                        observed: String(
                            format: "p50 %.2f ms, max %.2f ms", harnessWakes.median, harnessWakes.values.max() ?? .nan),
                        met: harnessWakes.median <= 100))
            }
            report.comparisons.append(
                Comparison(
                    metric: "wake a \(label)-event session, to the next brain call",
                    measurements: [
                        Measurement(subject: "corral harness", unit: "ms", samples: harnessWakes),
                        Measurement(subject: "bare store: wake + read every event", unit: "ms", samples: bareWakes),
                    ],
                    targets: targets))
            report.notes.append(
                String(
                    format: "%@-event session: %d compactions, built in %.1f s", label, built.compactions, built.seconds
                ))
            try? FileManager.default.removeItem(at: directory)
        }
        return report
    }

    static var quietLogger: Logger {
        var logger = Logger(label: "corral.bench.harness")
        logger.logLevel = .warning
        return logger
    }

    // MARK: Overhead

    static func stepOverhead(store: FileSessionStore, steps: Int) async throws -> (Samples, Int) {
        let brain = InstantBrain(steps: steps)
        let hands = InstantHands()
        let harness = Harness(store: store, hands: hands, logger: quietLogger)
        let spec = AgentSpec(brain: brain.spec, limits: .init(maxTurns: steps + 10))
        let session = try await harness.create(task: "benchmark: one tool call a turn", spec: spec)
        let outcome = try await harness.run(session, brain: brain)
        guard outcome.reason == "end_turn" else {
            throw CorralError(.internalError, "the overhead run ended with \(outcome.reason)")
        }
        let calls = brain.calls
        let tools = hands.toolTimes
        var samples = Samples()
        var toolIndex = 0
        var compactions = 0
        var index = 0
        // Each turn call's end to the next turn call's start, less tool and compaction time.
        while index < calls.count {
            guard calls[index].purpose == .turn, toolIndex < tools.count else {
                index += 1
                continue
            }
            var next = index + 1
            var brainTime = 0.0
            while next < calls.count, calls[next].purpose == .compaction {
                brainTime += calls[next].end - calls[next].start
                compactions += 1
                next += 1
            }
            guard next < calls.count else { break }
            samples.append((calls[next].start - calls[index].end - tools[toolIndex] - brainTime) * 1000)
            toolIndex += 1
            index = next
        }
        return (samples, compactions)
    }

    static func bareStepAppends(store: FileSessionStore, steps: Int) async throws -> Samples {
        let info = try await store.create()
        let lease = try await store.currentLease(info.id)
        var head: UInt64 = 0
        var samples = Samples()
        for step in 1...steps {
            let events = SessionGenerator.turnEvents(turn: step)
            let (_, milliseconds) = try await measureMilliseconds {
                for event in events {
                    head = try await store.append(
                        info.id, [event], expectedSeq: head + 1, lease: lease, durability: .fsync
                    ).head
                }
            }
            samples.append(milliseconds)
        }
        return samples
    }

    // MARK: Wake

    static func harnessWake(directory: URL, session: SessionID) async throws -> Double {
        let store = FileSessionStore(directory: directory)
        let brain = WakeProbe()
        let harness = Harness(store: store, hands: InstantHands(), logger: quietLogger)
        let started = ContinuousClock.now
        do {
            _ = try await harness.run(session, brain: brain)
        } catch let error as CorralError where error.code == .invalidArgument {
            // The probe refuses the turn: the session stays as it was, resumable.
        }
        guard let reached = brain.reached, brain.sawSummary else {
            throw CorralError(
                .internalError, "the woken harness did not rebuild its context from the latest compaction")
        }
        return (reached - started).milliseconds
    }

    static func bareWakeAndReadAll(directory: URL, session: SessionID) async throws -> Double {
        let store = FileSessionStore(directory: directory)
        let (_, milliseconds) = try await measureMilliseconds {
            _ = try await store.wake(session)
            var count = 0
            for try await _ in store.read(session) { count += 1 }
            return count
        }
        return milliseconds
    }
}

/// A brain that answers at once: one bash call a turn until `steps`, then done. It keeps
/// when each call started and ended, so that its time can be taken out.
final class InstantBrain: Brain {
    struct Call: Sendable {
        var purpose: BrainRequest.Purpose
        var start: Double
        var end: Double
    }

    let spec = BrainSpec(provider: .scripted, model: "instant")
    let steps: Int
    private let log = Mutex<[Call]>([])

    init(steps: Int) { self.steps = steps }

    var calls: [Call] { log.withLock { $0 } }

    func respond(to request: BrainRequest) async throws -> BrainResponse {
        let start = Self.now()
        let response: BrainResponse
        if request.purpose == .compaction {
            response = BrainResponse(
                content: [.text("Summary: the benchmark ran tool steps.")], stopReason: "end_turn", model: "instant")
        } else if request.turn <= steps {
            let use = ToolUse(
                id: "toolu_\(request.turn)", name: "bash", input: ["command": .string("echo step \(request.turn)")])
            response = BrainResponse(
                content: [.text("Step \(request.turn)."), .toolUse(use)], stopReason: "tool_use", model: "instant",
                usage: .init(inputTokens: 1000, outputTokens: 30))
        } else {
            response = BrainResponse(content: [.text("Done.")], stopReason: "end_turn", model: "instant")
        }
        let end = Self.now()
        log.withLock { $0.append(Call(purpose: request.purpose, start: start, end: end)) }
        return response
    }

    static func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}

/// The brain of a wake measurement: notes when it is first asked, then refuses, so the
/// session is left as it was (plus the harness.woke and brain.error events).
final class WakeProbe: Brain {
    let spec = BrainSpec(provider: .scripted, model: "probe")
    private let state = Mutex<(ContinuousClock.Instant?, Bool)>((nil, false))

    var reached: ContinuousClock.Instant? { state.withLock { $0.0 } }
    var sawSummary: Bool { state.withLock { $0.1 } }

    func respond(to request: BrainRequest) async throws -> BrainResponse {
        let now = ContinuousClock.now
        let summary = request.messages.first?.text.contains("was compacted at event") == true
        state.withLock { if $0.0 == nil { $0 = (now, summary || request.messages.count < 200) } }
        throw BrainError(.invalidRequest, "benchmark probe: stop here")
    }
}

/// Hands whose tools answer at once with a kilobyte of output, timing themselves.
final class InstantHands: HandProvisioner {
    private let times = Mutex<[Double]>([])
    var toolTimes: [Double] { times.withLock { $0 } }

    var tools: [any SandboxTool] { [BashTool(), TextEditorTool()] }
    func check(_ spec: HandSpec) throws {}

    func provision(_ request: HandRequest) async throws -> ProvisionedHand {
        ProvisionedHand(hand: InstantHand(sandboxID: SandboxID.random(), owner: self), path: "cold", milliseconds: 0)
    }

    func reattach(_ sandbox: SandboxID, request: HandRequest) -> any Hand {
        InstantHand(sandboxID: sandbox, owner: self)
    }
    func discard(_ sandbox: SandboxID, request: HandRequest) async {}

    func record(_ seconds: Double) { times.withLock { $0.append(seconds) } }
}

struct InstantHand: Hand {
    let sandboxID: SandboxID
    let owner: InstantHands
    static let output = String(repeating: "output line of a tool, about sixty bytes long, for the bench\n", count: 16)

    func execute(tool: String, input: JSONValue) async throws -> ToolOutput {
        let start = InstantBrain.now()
        let output = ToolOutput(
            text: Self.output, isError: false,
            status: CommandStatus(exitCode: 0, timedOut: false, oomKilled: false, durationMilliseconds: 0))
        owner.record(InstantBrain.now() - start)
        return output
    }

    func liveness() async -> HandLiveness { .running }
}

/// Writes sessions shaped as the harness writes them (see docs/harness.md), fast: turns of
/// brain.response, tool.intent and tool.result, and a context.compacted with its snapshot
/// each time the context would pass a 120k-token budget.
enum SessionGenerator {
    struct Built {
        var compactions: Int
        var seconds: Double
    }

    static let turnsPerCompaction = 300

    static func turnEvents(turn: Int) -> [NewEvent] {
        let id = "toolu_\(turn)"
        let input: JSONValue = ["command": .string("echo step \(turn)")]
        return [
            NewEvent(
                id: EventID(unchecked: "br.\(turn)"), type: HarnessEvent.brainResponse,
                data: [
                    "turn": .int(Int64(turn)), "stopReason": "tool_use", "model": "generated", "contextTokens": 40_000,
                    "content": [
                        ["type": "text", "text": .string("Step \(turn).")],
                        ["type": "tool_use", "id": .string(id), "name": "bash", "input": input],
                    ],
                    "usage": ["input": 1000, "output": 30],
                ]),
            NewEvent(
                id: EventID(unchecked: "ti.\(turn).1"), type: HarnessEvent.toolIntent,
                data: [
                    "turn": .int(Int64(turn)), "index": 1, "toolUseID": .string(id), "name": "bash", "input": input,
                    "idempotent": false, "sandbox": "main", "tool": "bash",
                ]),
            NewEvent(
                id: EventID(unchecked: "tr.\(turn).1"), type: HarnessEvent.toolResult,
                data: [
                    "turn": .int(Int64(turn)), "index": 1, "toolUseID": .string(id), "name": "bash", "status": "ok",
                    "text": .string(InstantHand.output), "sandbox": "main", "sandboxID": "sb-benchmark0001",
                    "exitCode": 0,
                ]),
        ]
    }

    static func build(directory: URL, events total: Int) async throws -> (SessionID, Built) {
        let clock = ContinuousClock()
        let started = clock.now
        let store = FileSessionStore(directory: directory)
        let info = try await store.create()
        let lease = try await store.currentLease(info.id)
        let spec = AgentSpec(
            brain: BrainSpec(provider: .scripted, model: "generated"), limits: .init(maxTurns: 1_000_000))
        var batch: [NewEvent] = [
            NewEvent(
                id: EventID(unchecked: "session.created"), type: HarnessEvent.sessionCreated,
                data: ["agent": agentJSON(spec)]),
            NewEvent(id: EventID(unchecked: "um.1"), type: HarnessEvent.userMessage, data: ["text": "benchmark task"]),
            NewEvent(
                id: EventID(unchecked: "sp.main.1"), type: HarnessEvent.sandboxProvisioned,
                data: ["name": "main", "sandbox": "sb-benchmark0001", "generation": 1, "path": "cold", "ms": 200]),
        ]
        var head: UInt64 = 0
        var turn = 0
        var compactions = 0
        var turnSeqs: [Int: UInt64] = [:]
        func flush() async throws {
            guard !batch.isEmpty else { return }
            head = try await store.append(info.id, batch, expectedSeq: head + 1, lease: lease, durability: .none).head
            batch = []
        }
        while Int(head) + batch.count + 3 <= total {
            turn += 1
            turnSeqs[turn] = head + UInt64(batch.count) + 1
            batch += turnEvents(turn: turn)
            if turn % turnsPerCompaction == 0, Int(head) + batch.count + 1 <= total {
                compactions += 1
                let keepFrom = turnSeqs[turn - 20] ?? 1
                let snapshot: JSONValue = [
                    "turns": .int(Int64(turn)), "userMessages": 1, "compactions": .int(Int64(compactions)),
                    "task": ["turns": .int(Int64(turn)), "tokens": .int(Int64(turn * 1030))],
                    "firstUserText": "benchmark task",
                    "sandboxes": ["main": ["id": "sb-benchmark0001", "generation": 1]],
                ]
                batch.append(
                    NewEvent(
                        id: EventID(unchecked: "cc.\(compactions)"), type: HarnessEvent.contextCompacted,
                        data: [
                            "number": .int(Int64(compactions)), "summary": "Summary: the benchmark ran tool steps.",
                            "keepFrom": .int(Int64(keepFrom)),
                            "through": .int(Int64(head) + Int64(batch.count)), "tokensBefore": 120_500,
                            "tokensAfter": 9_000, "snapshot": snapshot,
                        ]))
            }
            if batch.count >= 3000 { try await flush() }
        }
        try await flush()
        try await store.sync(info.id)
        return (info.id, Built(compactions: compactions, seconds: (clock.now - started).milliseconds / 1000))
    }

    /// The spec as session.created records it.
    static func agentJSON(_ spec: AgentSpec) -> JSONValue {
        [
            "brain": ["provider": .string(spec.brain.provider.rawValue), "model": .string(spec.brain.model)],
            "limits": ["maxTurns": .int(Int64(spec.limits.maxTurns))], "contextBudget": .int(Int64(spec.contextBudget)),
            "hands": [:],
        ]
    }
}
