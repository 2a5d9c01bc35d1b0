import CorralCore
import CorralSession

extension AgentLoop {
    static let compactionInstruction = """
        [corral] The context is full and is about to be compacted. Write a summary of the session so far that you \
        can continue from: the task and what is asked, what has been done and found, files created or changed, \
        commands that matter and their results, decisions taken, the current state, and the next steps. Answer \
        with the summary only, without calling a tool.
        """

    /// Tokens a summary may use: at most a quarter of the budget.
    var summaryTokens: Int { min(4096, spec.contextBudget / 4) }

    /// Over budget, asks the brain for a summary of all but the latest exchanges and appends
    /// `context.compacted`; later contexts start from it. The log itself is untouched.
    mutating func compactIfNeeded() async throws {
        let before = state.context.tokens + overheadTokens
        guard before > spec.contextBudget else { return }
        let tailBudget = Int(Double(spec.contextBudget) * configuration.compactionTailShare)
        let keepFrom = state.context.tailStart(within: tailBudget)
        var messages = state.context.entries.filter { entry in keepFrom.map { entry.seq < $0 } ?? true }.map(\.message)
        if let last = messages.indices.last, messages[last].role == .user {
            messages[last].content.append(.text(Self.compactionInstruction))
        } else {
            messages.append(.user(Self.compactionInstruction))
        }
        let number = state.compactions + 1
        let request = BrainRequest(
            system: system, messages: messages, tools: catalog.declarations, purpose: .compaction,
            turn: state.turns + 1,
            maxOutputTokens: summaryTokens)
        let response = try await call(request)
        var summary = response.text.trimmingCharacters(in: .whitespacesAndNewlines)
        if summary.isEmpty { summary = "(the brain wrote no summary; read the session's events with session_events)" }
        if summary.utf8.count > summaryTokens * 4 {
            summary = String(decoding: summary.utf8.prefix(summaryTokens * 4), as: UTF8.self) + " […]"
        }
        var data: [String: JSONValue] = [
            "number": .int(Int64(number)), "summary": .string(summary), "through": .int(Int64(state.head)),
            "keepFrom": keepFrom.map { .int(Int64($0)) } ?? .null, "tokensBefore": .int(Int64(before)),
            "usage": [
                "input": .int(Int64(response.usage.inputTokens)), "output": .int(Int64(response.usage.outputTokens)),
            ],
        ]
        var preview = state.context
        preview.compact(
            summary: state.summaryMessage(.object(data), seq: state.head + 1), keepFrom: keepFrom, seq: state.head + 1)
        let after = preview.tokens + overheadTokens
        data["tokensAfter"] = .int(Int64(after))
        var snapshot = state.snapshot
        if case .object(var members) = snapshot {
            members["compactions"] = .int(Int64(number))
            snapshot = .object(members)
        }
        data["snapshot"] = snapshot
        try await append(
            NewEvent(
                id: HarnessEventID.contextCompacted(number), type: HarnessEvent.contextCompacted, data: .object(data)))
        guard after <= spec.contextBudget else {
            throw CorralError(
                .resourceExhausted,
                "the context is still \(after) tokens after compaction, over the budget of \(spec.contextBudget) (the tools and system prompt alone take \(overheadTokens))",
                hint: "give a larger context budget (--context-budget)")
        }
    }
}
