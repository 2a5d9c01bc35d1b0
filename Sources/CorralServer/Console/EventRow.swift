import CorralCore
import CorralHarness
import CorralHost
import CorralSession
import Foundation

/// One event of a session's timeline: a line that says what happened (a brain turn and its
/// tokens, a tool call and how it ended, a sandbox and how fast it came), which opens to the
/// event's JSON. The session page renders its first screen with these, and the live stream
/// sends more of the same, so a row looks alike whichever way it arrived.
struct EventRow {
    let session: SessionID
    let event: Event
    /// When the event before it was written: a brain call lasts from there to its answer.
    let previousTime: Date?
    /// For an intent: whether its result is still to come.
    let open: Bool

    /// How much of an agent's text a row shows before cutting it.
    static let textLimit = 6000
    static let outputLimit = 8000
    static let snippetLimit = 160

    func render() -> HTML {
        let type = event.type
        let data = event.data
        var classes = "ev t-" + type.map { $0.isLetter || $0.isNumber ? String($0) : "-" }.joined()
        var attributes: HTML = ""
        var badge: HTML = ""
        var what: HTML = ""
        var snippet: HTML = ""
        var body: HTML = ""
        switch type {
        case HarnessEvent.brainResponse:
            let input = data["usage"]?["input"]?.intValue ?? 0
            let output = data["usage"]?["output"]?.intValue ?? 0
            let calls = (data["content"]?.arrayValue ?? []).filter { $0["type"]?.stringValue == "tool_use" }
                .compactMap { $0["name"]?.stringValue }
            var parts = [
                "turn \(data["turn"]?.intValue ?? 0)",
                "\(Display.grouped(input)) in / \(Display.grouped(output)) out tokens",
            ]
            if let previousTime {
                parts.append(Display.duration(milliseconds: event.time.timeIntervalSince(previousTime) * 1000))
            }
            if !calls.isEmpty { parts.append("calls " + calls.joined(separator: ", ")) }
            what = "\(parts.joined(separator: " · "))"
            snippet = Display.line(Self.text(of: data), limit: Self.snippetLimit)
            body = blocks(data["content"]?.arrayValue ?? [])
        case HarnessEvent.brainError:
            badge = Self.badge(data["final"]?.boolValue == true ? "failed" : "retried", state: "error")
            what = "\(data["kind"]?.stringValue ?? "error") · attempt \(data["attempt"]?.intValue ?? 0)"
            snippet = Display.line(data["message"]?.stringValue ?? "", limit: Self.snippetLimit)
        case HarnessEvent.toolIntent:
            let use = data["toolUseID"]?.stringValue ?? ""
            attributes = " data-intent=\"\(use)\""
            if open {
                classes += " open"
                badge = Self.badge("running", state: "running")
            }
            what = "\(data["name"]?.stringValue ?? "?")\(sandboxSuffix(data["sandbox"]?.stringValue))"
            snippet = Display.line(
                SessionSummary.preview(tool: data["tool"]?.stringValue ?? "", input: data["input"]),
                limit: Self.snippetLimit)
        case HarnessEvent.toolResult:
            let status = data["status"]?.stringValue ?? "ok"
            let use = data["toolUseID"]?.stringValue ?? ""
            attributes = " data-result-for=\"\(use)\" data-status=\"\(status)\""
            badge = Self.badge(status == "unknown" ? "unknown outcome" : status, state: status)
            var parts = ["\(data["name"]?.stringValue ?? "?")\(sandboxSuffix(data["sandbox"]?.stringValue))"]
            if let exit = data["exitCode"]?.intValue { parts.append("exit \(exit)") }
            if data["timedOut"]?.boolValue == true { parts.append("timed out") }
            if let ms = data["ms"]?.doubleValue { parts.append(Display.duration(milliseconds: ms)) }
            if data["rerun"]?.boolValue == true { parts.append("run again after a wake") }
            if data["truncated"]?.boolValue == true { parts.append("output cut") }
            what = "\(parts.joined(separator: " · "))"
            let text = data["text"]?.stringValue ?? ""
            snippet = Display.line(text, limit: Self.snippetLimit)
            if status == "unknown" {
                body +=
                    "<p class=\"notice\">The harness stopped between this call's intent and its result: it may have run fully, partly or not at all.</p>"
            }
            body += "<pre class=\"output\">\(Display.text(text, limit: Self.outputLimit))</pre>"
        case HarnessEvent.sandboxProvisioned:
            let path = data["path"]?.stringValue ?? "?"
            badge = Self.badge(path, state: path == "warm" ? "warm" : "cold")
            var parts = ["sandbox \(data["name"]?.stringValue ?? "?")"]
            if let ms = data["ms"]?.doubleValue { parts.append("in \(Display.duration(milliseconds: ms))") }
            if let replaced = data["replaces"]?.stringValue { parts.append("replaces \(replaced)") }
            what = "\(parts.joined(separator: " · ")) "
            if let id = data["sandbox"]?.stringValue.flatMap(SandboxID.init) {
                what += "<a href=\"/console/sandboxes/\(id)\">\(id)</a>"
            }
        case HarnessEvent.sandboxLost:
            badge = Self.badge("lost", state: "lost")
            what = "sandbox \(data["name"]?.stringValue ?? "?") (\(data["sandbox"]?.stringValue ?? "?"))"
            snippet = Display.line(data["reason"]?.stringValue ?? "", limit: Self.snippetLimit)
        case HarnessEvent.harnessWoke:
            let repairs = data["repairs"]?.arrayValue ?? []
            what = "epoch \(data["epoch"]?.intValue ?? 0)\(repairs.isEmpty ? "" : " · \(repairs.count) repairs")"
        case HarnessEvent.contextCompacted:
            let before = data["tokensBefore"]?.intValue ?? 0
            let after = data["tokensAfter"]?.intValue ?? 0
            what =
                "compaction \(data["number"]?.intValue ?? 0) · \(Display.grouped(before)) → \(Display.grouped(after)) tokens"
            snippet = Display.line(data["summary"]?.stringValue ?? "", limit: Self.snippetLimit)
        case HarnessEvent.sessionEnded:
            badge = Self.badge("ended", state: "ended")
            what = "\(data["reason"]?.stringValue ?? "") · \(data["turns"]?.intValue ?? 0) turns"
            snippet = Display.line(data["text"]?.stringValue ?? "", limit: Self.snippetLimit)
        case HarnessEvent.userMessage:
            snippet = Display.line(data["text"]?.stringValue ?? "", limit: Self.snippetLimit)
            body = "<div class=\"text\">\(Display.text(data["text"]?.stringValue ?? "", limit: Self.textLimit))</div>"
        case HarnessEvent.sessionCreated:
            let brain = data["agent"]?["brain"]
            let provider = brain?["provider"]?.stringValue ?? "?"
            let model = provider == "scripted" ? "" : " · " + (brain?["model"]?.stringValue ?? "")
            what = "agent · \(provider)\(model)"
        default:
            snippet = Display.line(JSONCodec.string(data), limit: Self.snippetLimit)
        }
        let json = JSONView.render(Self.shown(event))
        let link = "/console/sessions/\(session.rawValue)/events/\(event.seq)"
        return """
            <li class="\(classes)" id="ev-\(event.seq)" data-seq="\(event.seq)"\(attributes)><details>\
            <summary><span class="seq">\(event.seq)</span><time datetime="\(Timestamp.rfc3339(event.time))">\
            \(Display.clock(event.time))</time><span class="type">\(type)</span>\(badge)<span class="what">\(what)</span>\
            <span class="snip">\(snippet)</span></summary>
            <div class="detail">\(body)<pre class="json">\(json.text)</pre>\
            <p><a href="\(link)">The whole event as JSON</a>\(json.complete ? "" : " (cut above)")</p></div>\
            </details></li>

            """
    }

    /// What the JSON view shows: the event as the API gives it, less what the row's body
    /// already shows in full (a tool's output is shown once, above).
    static func shown(_ event: Event) -> JSONValue {
        var data = event.data
        if event.type == HarnessEvent.toolResult, var object = data.objectValue, let text = object["text"]?.stringValue,
            text.unicodeScalars.count > 400
        {
            object["text"] = .string(String(text.unicodeScalars.prefix(400)) + "… (shown above)")
            data = .object(object)
        }
        return [
            "seq": .int(Int64(event.seq)), "id": .string(event.id.rawValue), "type": .string(event.type),
            "time": .string(Timestamp.rfc3339(event.time)), "epoch": .int(Int64(event.epoch)), "data": data,
        ]
    }

    static func badge(_ text: String, state: String) -> HTML {
        let safe = state.filter { $0.isLetter || $0 == "-" }
        return " <span class=\"badge s-\(safe)\">\(text)</span> "
    }

    func sandboxSuffix(_ name: String?) -> String {
        guard let name, name != "main" else { return "" }
        return " in \(name)"
    }

    /// The text blocks of a brain response, joined.
    static func text(of data: JSONValue) -> String {
        (data["content"]?.arrayValue ?? []).compactMap { block in
            block["type"]?.stringValue == "text" ? block["text"]?.stringValue : nil
        }.joined(separator: "\n")
    }

    func blocks(_ content: [JSONValue]) -> HTML {
        var out: HTML = ""
        for block in content.prefix(64) {
            switch block["type"]?.stringValue {
            case "text":
                out +=
                    "<div class=\"text\">\(Display.text(block["text"]?.stringValue ?? "", limit: Self.textLimit))</div>"
            case "tool_use":
                let input = JSONView.render(block["input"] ?? .null, stringLimit: 1000, totalLimit: 4000)
                out += "<p>calls <b>\(block["name"]?.stringValue ?? "?")</b>:</p><pre>\(input.text)</pre>"
            default:
                continue
            }
        }
        return out
    }
}
