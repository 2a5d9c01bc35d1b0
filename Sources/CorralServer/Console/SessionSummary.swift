import CorralCore
import CorralHarness
import CorralHost
import CorralSession
import Foundation

/// What the console tells about a session without reading its log again: folded from the
/// events one at a time (`fold`), so that a summary is brought up to date by reading only the
/// events appended since. The session list, the session page's header and its "where the
/// time went" strip, and the sandbox pages' command lists come from here.
struct SessionSummary: Sendable {
    /// The last seq folded in.
    var head: UInt64 = 0
    var firstTime: Date?
    var lastTime: Date?
    var lastType: String?
    /// From `session.created` (or a later `harness.woke`): `anthropic`, and the model.
    var brainProvider: String?
    var brainModel: String?
    /// The first user message, cut short.
    var task: String?
    var tokensIn: Int64 = 0
    var tokensOut: Int64 = 0
    var turns = 0
    /// True while the latest `session.ended` came after the latest user message.
    var ended = false
    var endReason: String?
    var compactions = 0
    var wakes = 0
    var brainErrors = 0
    var unknownResults = 0
    var toolErrors = 0
    /// Where the time went, in milliseconds: brain calls (answers, failures and compaction
    /// summaries: from the event before to the brain's event), tool calls (their `ms`), and
    /// provisioning (`sandbox.provisioned`'s `ms`, which a tool call's `ms` does not include).
    var brainMilliseconds = 0.0
    var toolMilliseconds = 0.0
    var provisionMilliseconds = 0.0
    /// Time after `session.ended` until the next event: the session waited for a user.
    var idleMilliseconds = 0.0
    var tools: [String: ToolStats] = [:]
    /// The session's sandboxes by name, as they are now.
    var sandboxes: [String: SandboxID] = [:]
    /// Every sandbox the session ever had, in the order they came.
    var everySandbox: [SandboxID] = []
    /// Tool calls with an intent and no result yet, by tool use id.
    var openIntents: [String: OpenIntent] = [:]
    /// The latest commands run in each sandbox, oldest first.
    var commands: [SandboxID: [Command]] = [:]
    /// Provisioning of each sandbox: warm or cold, how long.
    var provisions: [SandboxID: Provision] = [:]
    /// Command previews of open intents, kept until their result (an intent's command is
    /// recorded only once its sandbox is known).
    private var previews: [String: String] = [:]

    static let commandsKept = 40
    static let durationsKept = 2000

    struct ToolStats: Sendable, Hashable {
        var calls = 0
        var ok = 0
        var errors = 0
        var unknown = 0
        var totalMilliseconds = 0.0
        /// The latest durations, for percentiles.
        var durations: [Double] = []
    }

    struct OpenIntent: Sendable, Hashable {
        var seq: UInt64
        var name: String
        var sandboxName: String?
        var sandbox: SandboxID?
        var time: Date
    }

    struct Command: Sendable, Hashable {
        var toolUseID: String
        var intentSeq: UInt64
        var resultSeq: UInt64?
        var tool: String
        /// The command line, or the editor's command and path, cut short.
        var preview: String
        var started: Date
        var status: String?
        var exitCode: Int64?
        var milliseconds: Double?
    }

    struct Provision: Sendable, Hashable {
        var name: String
        var path: String
        var milliseconds: Double
        var seq: UInt64
    }

    var brain: String? {
        guard let brainProvider else { return nil }
        guard let brainModel, !brainModel.isEmpty, brainProvider != "scripted" else { return brainProvider }
        return "\(brainProvider) · \(brainModel)"
    }

    /// Milliseconds from the first event to the last, less the time the session sat ended.
    var activeMilliseconds: Double {
        guard let firstTime, let lastTime else { return 0 }
        return max(0, lastTime.timeIntervalSince(firstTime) * 1000 - idleMilliseconds)
    }

    mutating func fold(_ events: some Sequence<Event>) {
        for event in events { fold(event) }
    }

    mutating func fold(_ event: Event) {
        guard event.seq > head else { return }
        let previous = lastTime
        if ended, let previous { idleMilliseconds += max(0, event.time.timeIntervalSince(previous) * 1000) }
        head = event.seq
        if firstTime == nil { firstTime = event.time }
        lastTime = event.time
        lastType = event.type
        let data = event.data
        switch event.type {
        case HarnessEvent.sessionCreated:
            let brain = data["agent"]?["brain"] ?? data["brain"]
            brainProvider = brain?["provider"]?.stringValue
            brainModel = brain?["model"]?.stringValue
        case HarnessEvent.userMessage:
            if task == nil, let text = data["text"]?.stringValue { task = String(text.unicodeScalars.prefix(300)) }
            ended = false
            endReason = nil
        case HarnessEvent.brainResponse:
            turns += 1
            tokensIn += data["usage"]?["input"]?.intValue ?? 0
            tokensOut += data["usage"]?["output"]?.intValue ?? 0
            if let model = data["model"]?.stringValue, !model.isEmpty { brainModel = model }
            brainMilliseconds += Self.since(previous, event.time)
        case HarnessEvent.brainError:
            brainErrors += 1
            brainMilliseconds += Self.since(previous, event.time)
        case HarnessEvent.contextCompacted:
            compactions += 1
            tokensIn += data["usage"]?["input"]?.intValue ?? 0
            tokensOut += data["usage"]?["output"]?.intValue ?? 0
            brainMilliseconds += Self.since(previous, event.time)
        case HarnessEvent.harnessWoke:
            wakes += 1
            // `anthropic MODEL`, or `scripted:PATH`, whose path is the operator's business only.
            if let text = data["brain"]?.stringValue {
                if text.hasPrefix("scripted") {
                    brainProvider = "scripted"
                    brainModel = nil
                } else if let space = text.firstIndex(of: " ") {
                    brainProvider = String(text[..<space])
                    brainModel = String(text[text.index(after: space)...])
                }
            }
        case HarnessEvent.sessionEnded:
            ended = true
            endReason = data["reason"]?.stringValue
        case HarnessEvent.toolIntent:
            foldIntent(event)
        case HarnessEvent.toolResult:
            foldResult(event)
        case HarnessEvent.sandboxProvisioned:
            guard let name = data["name"]?.stringValue, let id = data["sandbox"]?.stringValue.flatMap(SandboxID.init)
            else { break }
            sandboxes[name] = id
            if !everySandbox.contains(id) { everySandbox.append(id) }
            let milliseconds = data["ms"]?.doubleValue ?? 0
            provisionMilliseconds += milliseconds
            provisions[id] = Provision(
                name: name, path: data["path"]?.stringValue ?? "?", milliseconds: milliseconds, seq: event.seq)
            // A first call provisions its sandbox after its intent: it ran there.
            for (useID, intent) in openIntents where intent.sandboxName == name && intent.sandbox == nil {
                openIntents[useID]?.sandbox = id
                addCommand(useID: useID, intent: intent, sandbox: id)
            }
        case HarnessEvent.sandboxLost:
            if let name = data["name"]?.stringValue, sandboxes[name]?.rawValue == data["sandbox"]?.stringValue {
                sandboxes[name] = nil
            }
        default:
            break
        }
    }

    private mutating func foldIntent(_ event: Event) {
        let data = event.data
        guard let useID = data["toolUseID"]?.stringValue else { return }
        let name = data["name"]?.stringValue ?? "?"
        let sandboxName = data["sandbox"]?.stringValue
        let sandbox = sandboxName.flatMap { sandboxes[$0] }
        let intent = OpenIntent(
            seq: event.seq, name: name, sandboxName: sandboxName, sandbox: sandbox, time: event.time)
        openIntents[useID] = intent
        if let sandbox { addCommand(useID: useID, intent: intent, sandbox: sandbox, input: data["input"]) }
        previews[useID] = Self.preview(tool: data["tool"]?.stringValue ?? name, input: data["input"])
    }

    private mutating func foldResult(_ event: Event) {
        let data = event.data
        let useID = data["toolUseID"]?.stringValue ?? ""
        let name = data["name"]?.stringValue ?? openIntents[useID]?.name ?? "?"
        let status = data["status"]?.stringValue ?? "ok"
        let milliseconds = data["ms"]?.doubleValue
        var stats = tools[name, default: ToolStats()]
        stats.calls += 1
        switch status {
        case "ok": stats.ok += 1
        case "unknown":
            stats.unknown += 1
            unknownResults += 1
        default:
            stats.errors += 1
            toolErrors += 1
        }
        if let milliseconds {
            stats.totalMilliseconds += milliseconds
            toolMilliseconds += milliseconds
            stats.durations.append(milliseconds)
            if stats.durations.count > Self.durationsKept {
                stats.durations.removeFirst(stats.durations.count - Self.durationsKept)
            }
        }
        tools[name] = stats
        let intent = openIntents.removeValue(forKey: useID)
        let sandbox = data["sandboxID"]?.stringValue.flatMap(SandboxID.init) ?? intent?.sandbox
        if let sandbox {
            if commands[sandbox]?.contains(where: { $0.toolUseID == useID }) != true, let intent {
                addCommand(useID: useID, intent: intent, sandbox: sandbox)
            }
            if let index = commands[sandbox]?.lastIndex(where: { $0.toolUseID == useID }) {
                commands[sandbox]?[index].resultSeq = event.seq
                commands[sandbox]?[index].status = status
                commands[sandbox]?[index].exitCode = data["exitCode"]?.intValue
                commands[sandbox]?[index].milliseconds = milliseconds
            }
        }
        previews[useID] = nil
    }

    private mutating func addCommand(useID: String, intent: OpenIntent, sandbox: SandboxID, input: JSONValue? = nil) {
        let preview = input.map { Self.preview(tool: intent.name, input: $0) } ?? previews[useID] ?? ""
        var list = commands[sandbox, default: []]
        list.append(
            Command(
                toolUseID: useID, intentSeq: intent.seq, tool: intent.name, preview: preview, started: intent.time))
        if list.count > Self.commandsKept { list.removeFirst(list.count - Self.commandsKept) }
        commands[sandbox] = list
    }

    /// `ls -la` for bash; `view /workspace/a.py` for the editor; the inner call of
    /// `sandbox_tool`.
    static func preview(tool: String, input: JSONValue?) -> String {
        guard let input else { return "" }
        if let inner = input["input"], input["tool"] != nil {
            return preview(tool: input["tool"]?.stringValue ?? tool, input: inner)
        }
        if let command = input["command"]?.stringValue {
            if let path = input["path"]?.stringValue { return String("\(command) \(path)".unicodeScalars.prefix(300)) }
            return String(command.unicodeScalars.prefix(300))
        }
        return String(JSONCodec.string(input).unicodeScalars.prefix(300))
    }

    static func since(_ previous: Date?, _ time: Date) -> Double {
        guard let previous else { return 0 }
        return max(0, time.timeIntervalSince(previous) * 1000)
    }

    /// The `fraction` percentile (0...1) of `values`, nearest rank; nil when empty.
    static func percentile(_ values: [Double], _ fraction: Double) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        let rank = Int((fraction * Double(sorted.count)).rounded(.up)) - 1
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }
}
