import CorralCore
import CorralSession
import Foundation

/// Everything the harness knows about a session, derived from its events alone. A harness
/// builds it on wake and folds in each event it appends; nothing else is kept.
struct SessionState: Sendable {
    var spec: AgentSpec?
    /// The last seq folded in.
    var head: UInt64 = 0
    /// `brain.response` events in the whole session: the number of the latest turn.
    var turns = 0
    var userMessages = 0
    var compactions = 0
    /// Counters since the latest user message, for the limits.
    var task = TaskCounters()
    /// The first user message: the task, restated after each compaction.
    var firstUserText: String?
    /// The session's sandboxes by name.
    var sandboxes: [String: SandboxRecord] = [:]
    /// Set by `session.ended`, cleared by a later user message.
    var ended: String?
    /// The latest brain response's tool calls, while any of them lacks a result.
    var pending: PendingTurn?
    var context = ContextWindow()

    struct TaskCounters: Sendable, Hashable {
        var turns = 0
        var tokens = 0
        var started: Date?
    }

    struct SandboxRecord: Sendable, Hashable {
        /// nil once the sandbox was lost: the next call that needs it makes a new one.
        var id: SandboxID?
        /// How many sandboxes this name has had.
        var generation: Int
    }

    struct PendingTurn: Sendable, Hashable {
        var turn: Int
        var calls: [PendingCall]

        var unresolved: [PendingCall] { calls.filter { $0.resultSeq == nil } }
    }

    struct PendingCall: Sendable, Hashable {
        var index: Int
        var use: ToolUse
        var intentSeq: UInt64?
        var resultSeq: UInt64?
    }

    /// The context's budget, from the spec.
    var contextBudget: Int { spec?.contextBudget ?? AgentSpec.defaultContextBudget }

    /// Longest tool output kept in the context; the full text stays in the event.
    var toolResultCap: Int { min(64 << 10, contextBudget / 8 * 4) }

    // MARK: Folding events

    /// Folds one event into the state and the context.
    mutating func apply(_ event: Event) {
        head = event.seq
        let data = event.data
        switch event.type {
        case HarnessEvent.sessionCreated:
            spec = data["agent"].flatMap(AgentSpec.init(json:))
        case HarnessEvent.userMessage:
            userMessages += 1
            if firstUserText == nil { firstUserText = data["text"]?.stringValue }
            task = TaskCounters(turns: 0, tokens: 0, started: event.time)
            ended = nil
        case HarnessEvent.brainResponse:
            let turn = data["turn"]?.intOrNil ?? turns + 1
            turns = max(turns, turn)
            task.turns += 1
            task.tokens += (data["usage"]?["input"]?.intOrNil ?? 0) + (data["usage"]?["output"]?.intOrNil ?? 0)
            let uses = Self.blocks(data).compactMap { if case .toolUse(let use) = $0 { use } else { nil } }
            pending =
                uses.isEmpty
                ? nil
                : PendingTurn(
                    turn: turn, calls: uses.enumerated().map { PendingCall(index: $0.offset + 1, use: $0.element) })
        case HarnessEvent.toolIntent:
            if let index = pendingIndex(data) { pending?.calls[index].intentSeq = event.seq }
        case HarnessEvent.toolResult:
            if let index = pendingIndex(data) {
                pending?.calls[index].resultSeq = event.seq
                if pending?.unresolved.isEmpty == true { pending = nil }
            }
        case HarnessEvent.sandboxProvisioned:
            if let name = data["name"]?.stringValue, let id = data["sandbox"]?.stringValue.flatMap(SandboxID.init) {
                let generation = data["generation"]?.intOrNil ?? (sandboxes[name]?.generation ?? 0) + 1
                sandboxes[name] = SandboxRecord(id: id, generation: generation)
            }
        case HarnessEvent.sandboxLost:
            if let name = data["name"]?.stringValue, var record = sandboxes[name] {
                record.id = nil
                sandboxes[name] = record
            }
        case HarnessEvent.contextCompacted:
            compactions += 1
        case HarnessEvent.sessionEnded:
            ended = data["reason"]?.stringValue ?? "ended"
        default:
            break
        }
        applyToContext(event)
    }

    /// Folds one event into the context only: for the events a compaction kept verbatim,
    /// whose effect on the state its snapshot already holds.
    mutating func applyToContext(_ event: Event) {
        let data = event.data
        switch event.type {
        case HarnessEvent.userMessage:
            context.append(.user(data["text"]?.stringValue ?? ""), seq: event.seq)
        case HarnessEvent.brainResponse:
            var content = Self.blocks(data)
            if content.isEmpty { content = [.text("(empty response)")] }
            context.append(TranscriptMessage(role: .assistant, content: content), seq: event.seq)
        case HarnessEvent.toolResult:
            guard let id = data["toolUseID"]?.stringValue else { return }
            let text = Self.contextText(data["text"]?.stringValue ?? "", cap: toolResultCap, seq: event.seq)
            let isError = data["status"]?.stringValue != ToolCallStatus.ok.rawValue
            context.append(
                TranscriptMessage(
                    role: .user, content: [.toolResult(ToolResultBlock(toolUseID: id, text: text, isError: isError))]),
                seq: event.seq)
        case HarnessEvent.contextCompacted:
            let keepFrom = data["keepFrom"]?.intValue.map { UInt64($0) }
            context.compact(summary: summaryMessage(data, seq: event.seq), keepFrom: keepFrom, seq: event.seq)
        default:
            break
        }
    }

    private func pendingIndex(_ data: JSONValue) -> Int? {
        guard let pending, let turn = data["turn"]?.intOrNil, turn == pending.turn, let index = data["index"]?.intOrNil
        else {
            return nil
        }
        return pending.calls.firstIndex { $0.index == index }
    }

    static func blocks(_ data: JSONValue) -> [ContentBlock] {
        (data["content"]?.arrayValue ?? []).compactMap(ContentBlock.init(json:))
    }

    /// A tool's output as the context holds it: cut in the middle past `cap` bytes, with a
    /// pointer to the event that holds all of it.
    static func contextText(_ text: String, cap: Int, seq: UInt64) -> String {
        let bytes = text.utf8.count
        guard bytes > cap else { return text }
        let half = cap / 2
        let head = String(decoding: text.utf8.prefix(half), as: UTF8.self)
        let tail = String(decoding: text.utf8.suffix(half), as: UTF8.self)
        return head
            + "\n[corral: \(bytes - 2 * half) bytes cut here to fit the context; session_events from \(seq) limit 1 shows the whole output]\n"
            + tail
    }

    /// The user message that stands for everything a compaction summarised.
    func summaryMessage(_ data: JSONValue, seq: UInt64) -> TranscriptMessage {
        let summary = data["summary"]?.stringValue ?? "(no summary)"
        let taskCap = contextBudget / 8 * 4
        var taskText = firstUserText ?? "(unknown)"
        if taskText.utf8.count > taskCap {
            taskText = String(decoding: taskText.utf8.prefix(taskCap), as: UTF8.self) + " […]"
        }
        return .user(
            """
            [corral] The earlier part of this session was compacted at event \(seq) to fit the context. Every event \
            stays readable with the session_events tool.

            The task:
            \(taskText)

            Summary of the work so far:
            \(summary)
            """)
    }

    // MARK: Snapshots

    /// What a `context.compacted` event records, so that a woken harness can start from it
    /// instead of the beginning of the log.
    var snapshot: JSONValue {
        var hands: [String: JSONValue] = [:]
        for (name, record) in sandboxes {
            hands[name] = [
                "id": record.id.map { .string($0.rawValue) } ?? .null, "generation": .int(Int64(record.generation)),
            ]
        }
        var taskValue: [String: JSONValue] = ["turns": .int(Int64(task.turns)), "tokens": .int(Int64(task.tokens))]
        if let started = task.started { taskValue["started"] = .double(started.timeIntervalSince1970) }
        return [
            "turns": .int(Int64(turns)), "userMessages": .int(Int64(userMessages)),
            "compactions": .int(Int64(compactions)),
            "task": .object(taskValue), "firstUserText": firstUserText.map { .string($0) } ?? .null,
            "sandboxes": .object(hands),
        ]
    }

    /// Takes the counters and sandboxes from a compaction's snapshot.
    mutating func restore(_ snapshot: JSONValue) {
        turns = snapshot["turns"]?.intOrNil ?? turns
        userMessages = snapshot["userMessages"]?.intOrNil ?? userMessages
        compactions = snapshot["compactions"]?.intOrNil ?? compactions
        task = TaskCounters(
            turns: snapshot["task"]?["turns"]?.intOrNil ?? 0, tokens: snapshot["task"]?["tokens"]?.intOrNil ?? 0,
            started: snapshot["task"]?["started"]?.doubleValue.map { Date(timeIntervalSince1970: $0) })
        firstUserText = snapshot["firstUserText"]?.stringValue ?? firstUserText
        sandboxes = [:]
        for (name, value) in snapshot["sandboxes"]?.objectValue ?? [:] {
            sandboxes[name] = SandboxRecord(
                id: value["id"]?.stringValue.flatMap(SandboxID.init), generation: value["generation"]?.intOrNil ?? 1)
        }
        pending = nil
        ended = nil
    }
}

/// The messages sent to the brain: since the latest compaction, with a token estimate.
struct ContextWindow: Sendable {
    struct Entry: Sendable {
        var message: TranscriptMessage
        var tokens: Int
        /// The seq of the event that began it.
        var seq: UInt64
    }

    private(set) var entries: [Entry] = []
    private(set) var tokens = 0

    var messages: [TranscriptMessage] { entries.map(\.message) }

    /// Adds a message, merging it into the last one when the role is the same, so that
    /// roles always alternate.
    mutating func append(_ message: TranscriptMessage, seq: UInt64) {
        if let last = entries.indices.last, entries[last].message.role == message.role {
            tokens -= entries[last].tokens
            entries[last].message.content += message.content
            entries[last].tokens = entries[last].message.estimatedTokens
            tokens += entries[last].tokens
        } else {
            let entry = Entry(message: message, tokens: message.estimatedTokens, seq: seq)
            entries.append(entry)
            tokens += entry.tokens
        }
    }

    /// Replaces everything before `keepFrom` by `summary`.
    mutating func compact(summary: TranscriptMessage, keepFrom: UInt64?, seq: UInt64) {
        let kept = keepFrom.map { from in entries.filter { $0.seq >= from } } ?? []
        entries = [Entry(message: summary, tokens: summary.estimatedTokens, seq: seq)]
        tokens = entries[0].tokens
        for entry in kept {
            entries.append(entry)
            tokens += entry.tokens
        }
    }

    /// Starts from a summary alone, for a woken harness that then folds the kept events in.
    mutating func reset(summary: TranscriptMessage, seq: UInt64) {
        entries = [Entry(message: summary, tokens: summary.estimatedTokens, seq: seq)]
        tokens = entries[0].tokens
    }

    /// Where a compaction may cut: the seq of the first assistant entry of the longest tail
    /// that fits in `budget` tokens, or nil when not even the last exchange fits.
    func tailStart(within budget: Int) -> UInt64? {
        var total = 0
        var start: UInt64?
        for entry in entries.reversed() {
            total += entry.tokens
            if total > budget { break }
            if entry.message.role == .assistant { start = entry.seq }
        }
        // The tail must leave something to summarise.
        if let start, start == entries.first?.seq { return nil }
        return start
    }
}
