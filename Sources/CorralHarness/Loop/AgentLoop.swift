import CorralCore
import CorralSession
import Foundation
import Logging

/// One harness's run of one session. It lives inside `Harness.run` and dies with it; its
/// state is the session's, folded from the log and from each event it appends.
struct AgentLoop {
    let harness: Harness
    let session: SessionID
    let lease: Lease
    let brain: any Brain
    let spec: AgentSpec
    let catalog: ToolCatalog
    let system: String
    /// Tokens the system prompt and tool declarations take in every request.
    let overheadTokens: Int
    let observer: (@Sendable (Event) -> Void)?
    var state: SessionState
    var queuedMessage: String?
    /// Handles on the session's sandboxes, made as calls need them; ids come from the log.
    var liveHands: [String: any Hand] = [:]

    var store: any SessionStore { harness.store }
    var configuration: Harness.Configuration { harness.configuration }
    var logger: Logger { harness.logger }

    init(
        harness: Harness, session: SessionID, lease: Lease, brain: any Brain, spec: AgentSpec, state: SessionState,
        queuedMessage: String?, observer: (@Sendable (Event) -> Void)?
    ) {
        self.harness = harness
        self.session = session
        self.lease = lease
        self.brain = brain
        self.spec = spec
        self.state = state
        self.state.spec = spec
        self.queuedMessage = queuedMessage
        self.observer = observer
        self.catalog = ToolCatalog(provider: brain.spec.provider, handTools: harness.hands.tools)
        self.system = spec.system ?? harness.configuration.defaultSystemPrompt
        let declared = JSONCodec.encode(
            .array(
                catalog.declarations.map {
                    ["name": .string($0.name), "description": .string($0.description), "input_schema": $0.inputSchema]
                }))
        self.overheadTokens = (declared.count + system.utf8.count) / 4 + 16
    }

    // MARK: Appending

    /// Appends events under this harness's lease at the head it knows, then folds them in.
    /// Ids are deterministic, so a retry of an append that landed is recognised by the store.
    @discardableResult
    mutating func append(_ events: [NewEvent]) async throws -> [Event] {
        let result: AppendResult
        do {
            result = try await store.append(
                session, events, expectedSeq: state.head + 1, lease: lease, durability: .fsync)
        } catch let error as CorralError where error.code == .conflict {
            throw CorralError(
                .conflict,
                "session \(session) was taken over by another harness; this one (epoch \(lease.epoch)) stops",
                hint: "only the newest harness of a session may write to it", underlying: error)
        }
        let now = configuration.now()
        var appended: [Event] = []
        for (event, stored) in zip(events, result.events) {
            let full = Event(
                seq: stored.seq, id: stored.id, type: event.type, time: now, epoch: lease.epoch, data: event.data)
            state.apply(full)
            appended.append(full)
            observer?(full)
        }
        return appended
    }

    mutating func append(_ event: NewEvent) async throws {
        try await append([event])
    }

    // MARK: The loop

    /// Says that this harness took the session over, and what it will repair.
    mutating func announce() async throws {
        var repairs: [JSONValue] = []
        if let pending = state.pending {
            for call in pending.unresolved {
                let action: String
                if call.intentSeq == nil {
                    action = "run"
                } else {
                    action = catalog.isIdempotent(catalog.route(call.use)) ? "rerun" : "unknown"
                }
                repairs.append([
                    "toolUseID": .string(call.use.id), "name": .string(call.use.name), "action": .string(action),
                ])
            }
        }
        try await append(
            NewEvent(
                id: HarnessEventID.harnessWoke(epoch: lease.epoch), type: HarnessEvent.harnessWoke,
                data: [
                    "epoch": .int(Int64(lease.epoch)), "head": .int(Int64(state.head)),
                    "brain": .string(brain.spec.description),
                    "repairs": .array(repairs),
                ]))
    }

    mutating func drive() async throws -> RunOutcome {
        while true {
            try Task.checkCancellation()
            if let pending = state.pending, let call = pending.unresolved.first {
                try await settle(call, turn: pending.turn)
                continue
            }
            if let message = queuedMessage {
                queuedMessage = nil
                try await append(
                    NewEvent(
                        id: HarnessEventID.userMessage(state.userMessages + 1), type: HarnessEvent.userMessage,
                        data: ["text": .string(message)]))
                continue
            }
            if let reason = state.ended {
                return RunOutcome(
                    session: session, reason: reason, turns: state.task.turns, text: lastText, resumed: true)
            }
            guard let last = state.context.entries.last else {
                throw CorralError(.invalidArgument, "session \(session) has no messages to send to the brain")
            }
            if last.message.role == .assistant {
                try await end(reason: "end_turn")
                continue
            }
            if let limit = limitReached() {
                try await end(reason: limit)
                continue
            }
            try await compactIfNeeded()
            let turn = state.turns + 1
            let request = BrainRequest(
                system: system, messages: state.context.messages, tools: catalog.declarations, purpose: .turn,
                turn: turn,
                maxOutputTokens: configuration.maxOutputTokens)
            let contextTokens = state.context.tokens + overheadTokens
            let response = try await call(request)
            var data: [String: JSONValue] = [
                "turn": .int(Int64(turn)), "content": .array(response.content.map(\.jsonValue)),
                "stopReason": .string(response.stopReason),
                "model": .string(response.model), "contextTokens": .int(Int64(contextTokens)),
                "usage": [
                    "input": .int(Int64(response.usage.inputTokens)),
                    "output": .int(Int64(response.usage.outputTokens)),
                ],
            ]
            if let id = response.id { data["responseID"] = .string(id) }
            try await append(
                NewEvent(
                    id: HarnessEventID.brainResponse(turn: turn), type: HarnessEvent.brainResponse, data: .object(data))
            )
        }
    }

    var lastText: String? {
        guard let last = state.context.entries.last, last.message.role == .assistant else { return nil }
        let text = last.message.text
        return text.isEmpty ? nil : text
    }

    mutating func end(reason: String) async throws {
        var data: [String: JSONValue] = ["reason": .string(reason), "turns": .int(Int64(state.task.turns))]
        if let text = lastText { data["text"] = .string(String(text.prefix(4000))) }
        try await append(
            NewEvent(
                id: HarnessEventID.sessionEnded(turn: state.turns, userMessages: state.userMessages),
                type: HarnessEvent.sessionEnded,
                data: .object(data)))
    }

    func limitReached() -> String? {
        if state.task.turns >= spec.limits.maxTurns { return "max_turns" }
        if let max = spec.limits.maxTokens, state.task.tokens >= max { return "max_tokens" }
        if let wall = spec.limits.maxWallTime, let started = state.task.started,
            configuration.now().timeIntervalSince(started) * 1000 >= wall.milliseconds
        {
            return "wall_time"
        }
        return nil
    }

    // MARK: The brain

    /// Calls the brain, recording each failed attempt as `brain.error` and retrying those
    /// that may succeed later, after the wait the policy (or the server) sets.
    mutating func call(_ request: BrainRequest) async throws -> BrainResponse {
        let policy = configuration.retry
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await brain.respond(to: request)
            } catch let error as BrainError {
                let retry = error.isRetryable && attempt < policy.maxAttempts
                let delay = retry ? policy.delay(afterAttempt: attempt, error: error) : nil
                var data: [String: JSONValue] = [
                    "turn": .int(Int64(request.turn)),
                    "purpose": .string(request.purpose == .turn ? "turn" : "compaction"),
                    "attempt": .int(Int64(attempt)), "kind": .string(error.kind.rawValue),
                    "message": .string(error.message),
                    "retryable": .bool(error.isRetryable), "final": .bool(!retry),
                ]
                if let status = error.status { data["status"] = .int(Int64(status)) }
                if let delay { data["retryInMs"] = .int(Int64(delay.milliseconds)) }
                try await append(
                    NewEvent(
                        id: HarnessEventID.brainError(
                            turn: request.turn, epoch: lease.epoch, attempt: attempt,
                            compaction: request.purpose == .compaction),
                        type: HarnessEvent.brainError, data: .object(data)))
                logger.info(
                    "brain call failed",
                    metadata: [
                        "session": "\(session)", "kind": "\(error.kind.rawValue)", "attempt": "\(attempt)",
                        "retry": "\(retry)",
                    ])
                guard let delay else { throw Self.surface(error, session: session, attempts: attempt) }
                try await configuration.sleep(delay)
            }
        }
    }

    static func surface(_ error: BrainError, session: SessionID, attempts: Int) -> CorralError {
        let code: CorralError.Code
        switch error.kind {
        case .authentication: code = .permissionDenied
        case .invalidRequest: code = .invalidArgument
        default: code = .unavailable
        }
        let tries = attempts > 1 ? " after \(attempts) attempts" : ""
        return CorralError(
            code, "\(error.description)\(tries); session \(session) is saved and can be resumed",
            hint: error.hint.replacingOccurrences(of: "SESSION", with: session.rawValue))
    }
}
