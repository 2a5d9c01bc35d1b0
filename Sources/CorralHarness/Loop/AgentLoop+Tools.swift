import CorralCore
import CorralSandbox
import CorralSession
import Foundation

extension AgentLoop {
    /// Brings one tool call of the latest turn to a result. A call with no intent runs:
    /// `tool.intent` is made durable first, then it is dispatched, then `tool.result` is
    /// appended. A call whose intent has no result was cut short by a crash: it runs again
    /// when repeating it is harmless, and is otherwise recorded as `unknown`.
    mutating func settle(_ call: SessionState.PendingCall, turn: Int) async throws {
        let route = catalog.route(call.use)
        if let intentSeq = call.intentSeq {
            if catalog.isIdempotent(route) {
                let outcome = try await execute(route)
                try await record(call, turn: turn, outcome, rerun: true)
            } else {
                let text = """
                    [corral] The outcome of this call is unknown. The harness stopped after the call was dispatched \
                    (intent recorded at event \(intentSeq)) and before its result was recorded. It may have run fully, \
                    partly or not at all, and it is not safe to run again automatically. Check its effects before \
                    relying on them or running it again.
                    """
                try await record(call, turn: turn, CallOutcome(output: .error(text), status: .unknown))
            }
            return
        }
        var intent: [String: JSONValue] = [
            "turn": .int(Int64(turn)), "index": .int(Int64(call.index)), "toolUseID": .string(call.use.id),
            "name": .string(call.use.name), "input": call.use.input, "idempotent": .bool(catalog.isIdempotent(route)),
        ]
        if case .hand(let name, let tool, _) = route {
            intent["sandbox"] = .string(name)
            intent["tool"] = .string(tool)
        }
        try await append(
            NewEvent(
                id: HarnessEventID.toolIntent(turn: turn, index: call.index), type: HarnessEvent.toolIntent,
                data: .object(intent)))
        let outcome = try await execute(route)
        try await record(call, turn: turn, outcome)
    }

    struct CallOutcome {
        var output: ToolOutput
        var status: ToolCallStatus
        var sandbox: String?
        var sandboxID: SandboxID?
        var milliseconds: Double?

        init(
            output: ToolOutput, status: ToolCallStatus? = nil, sandbox: String? = nil, sandboxID: SandboxID? = nil,
            milliseconds: Double? = nil
        ) {
            self.output = output
            self.status = status ?? (output.isError ? .error : .ok)
            self.sandbox = sandbox
            self.sandboxID = sandboxID
            self.milliseconds = milliseconds
        }
    }

    mutating func record(_ call: SessionState.PendingCall, turn: Int, _ outcome: CallOutcome, rerun: Bool = false)
        async throws
    {
        var data: [String: JSONValue] = [
            "turn": .int(Int64(turn)), "index": .int(Int64(call.index)), "toolUseID": .string(call.use.id),
            "name": .string(call.use.name), "status": .string(outcome.status.rawValue),
            "text": .string(outcome.output.text),
        ]
        if let sandbox = outcome.sandbox { data["sandbox"] = .string(sandbox) }
        if let id = outcome.sandboxID { data["sandboxID"] = .string(id.rawValue) }
        if let status = outcome.output.status {
            data["exitCode"] = .int(Int64(status.exitCode))
            if status.timedOut { data["timedOut"] = true }
        }
        if outcome.output.truncated { data["truncated"] = true }
        if let milliseconds = outcome.milliseconds { data["ms"] = .double((milliseconds * 1000).rounded() / 1000) }
        if rerun { data["rerun"] = true }
        try await append(
            NewEvent(
                id: HarnessEventID.toolResult(turn: turn, index: call.index), type: HarnessEvent.toolResult,
                data: .object(data)))
    }

    /// Runs a routed call. Tool failures are outputs; only cancellation and store failures
    /// throw.
    mutating func execute(_ route: ToolCatalog.Route) async throws -> CallOutcome {
        switch route {
        case .refused(let message):
            return CallOutcome(output: .error(message))
        case .sessionEvents(let input):
            return CallOutcome(output: try await SessionEventsTool.run(store: store, session: session, input: input))
        case .listSandboxes:
            return CallOutcome(output: .success(sandboxListing()))
        case .hand(let name, let tool, let input):
            let hand: any Hand
            do {
                hand = try await self.hand(named: name)
            } catch let error as CorralError where error.code != .cancelled && error.code != .conflict {
                let hint = error.hint.map { " (\($0))" } ?? ""
                return CallOutcome(
                    output: .error("[corral] could not provision sandbox '\(name)': \(error.description)\(hint)"),
                    sandbox: name)
            } catch is CancellationError {
                throw CancellationError()
            } catch let error as CorralError {
                throw error
            } catch {
                return CallOutcome(
                    output: .error("[corral] could not provision sandbox '\(name)': \(error)"), sandbox: name)
            }
            let clock = ContinuousClock()
            let started = clock.now
            var output: ToolOutput
            do {
                output = try await hand.execute(tool: tool, input: input)
            } catch let unknown as HandOutcomeUnknown {
                var text = """
                    [corral] The outcome of this call is unknown: \(unknown.reason). It may have run fully, partly \
                    or not at all, and it is not safe to run again automatically. Check its effects before relying on \
                    them or running it again.
                    """
                if case .lost(let reason) = await hand.liveness() {
                    text += try await replaceLost(name, hand: hand, reason: reason)
                }
                return CallOutcome(
                    output: .error(text), status: .unknown, sandbox: name, sandboxID: hand.sandboxID,
                    milliseconds: (clock.now - started).milliseconds)
            }
            let elapsed = (clock.now - started).milliseconds
            if output.isError, case .lost(let reason) = await hand.liveness() {
                output.text += try await replaceLost(name, hand: hand, reason: reason)
            }
            return CallOutcome(output: output, sandbox: name, sandboxID: hand.sandboxID, milliseconds: elapsed)
        }
    }

    /// The named sandbox: a handle already made in this run, a reattached one the log
    /// records, or a new one (recorded as `sandbox.provisioned`).
    mutating func hand(named name: String) async throws -> any Hand {
        if let hand = liveHands[name] { return hand }
        let request = HandRequest(session: session, tenant: configuration.tenant, name: name, spec: spec.hands)
        if let id = state.sandboxes[name]?.id {
            let hand = harness.hands.reattach(id, request: request)
            liveHands[name] = hand
            return hand
        }
        return try await provision(name, replacing: nil)
    }

    mutating func provision(_ name: String, replacing old: SandboxID?) async throws -> any Hand {
        let request = HandRequest(session: session, tenant: configuration.tenant, name: name, spec: spec.hands)
        let generation = (state.sandboxes[name]?.generation ?? 0) + 1
        let made = try await harness.hands.provision(request)
        var data: [String: JSONValue] = [
            "name": .string(name), "sandbox": .string(made.hand.sandboxID.rawValue),
            "generation": .int(Int64(generation)),
            "path": .string(made.path), "ms": .double((made.milliseconds * 1000).rounded() / 1000),
        ]
        if let old { data["replaces"] = .string(old.rawValue) }
        if let template = spec.hands.template { data["template"] = .string(template) }
        if let repo = spec.hands.repo { data["repo"] = .string(repo) }
        try await append(
            NewEvent(
                id: HarnessEventID.sandboxProvisioned(name: name, generation: generation),
                type: HarnessEvent.sandboxProvisioned,
                data: .object(data)))
        liveHands[name] = made.hand
        return made.hand
    }

    /// Records that a sandbox is gone, makes its replacement, and returns what the model
    /// is told about it.
    mutating func replaceLost(_ name: String, hand: any Hand, reason: String) async throws -> String {
        let generation = state.sandboxes[name]?.generation ?? 1
        try await append(
            NewEvent(
                id: HarnessEventID.sandboxLost(name: name, generation: generation), type: HarnessEvent.sandboxLost,
                data: [
                    "name": .string(name), "sandbox": .string(hand.sandboxID.rawValue),
                    "generation": .int(Int64(generation)), "reason": .string(reason),
                ]))
        liveHands[name] = nil
        let request = HandRequest(session: session, tenant: configuration.tenant, name: name, spec: spec.hands)
        await harness.hands.discard(hand.sandboxID, request: request)
        let lost = "\n[corral] Sandbox '\(name)' (\(hand.sandboxID)) was lost: \(reason)."
        do {
            let replacement = try await provision(name, replacing: hand.sandboxID)
            return lost
                + " A new, empty sandbox (\(replacement.sandboxID)) replaces it: files and processes of the old one are gone. This call did not run in the new sandbox; run it again if it is still needed."
        } catch let error as CorralError where error.code != .cancelled && error.code != .conflict {
            return lost
                + " A replacement could not be made yet (\(error.description)); the next call that needs it tries again."
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as CorralError {
            throw error
        } catch {
            return lost + " A replacement could not be made yet (\(error)); the next call that needs it tries again."
        }
    }

    func sandboxListing() -> String {
        guard !state.sandboxes.isEmpty else {
            return
                "No sandboxes yet. \"main\" is made when bash or str_replace_based_edit_tool is first called; other names when a call names them."
        }
        return state.sandboxes.keys.sorted().map { name in
            let record = state.sandboxes[name]
            let id = record?.id.map(\.rawValue) ?? "lost; a new one is made on next use"
            return "\(name): \(id) (generation \(record?.generation ?? 0))"
        }.joined(separator: "\n")
    }
}
