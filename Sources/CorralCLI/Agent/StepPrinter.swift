import CorralCore
import CorralHarness
import CorralSession
import Foundation

/// Prints an agent's steps as they are recorded: readable lines, or one JSON event a line.
/// Writes straight to the descriptor, so that what was printed is out even if the process
/// is killed the next instant.
struct StepPrinter: Sendable {
    let json: Bool

    func print(_ event: Event) {
        var out = StandardOutput()
        if json {
            out.line(event.jsonLine)
        } else {
            for line in Self.lines(event) { out.line(line) }
        }
        out.flush()
    }

    static func lines(_ event: Event) -> [String] {
        let data = event.data
        switch event.type {
        case HarnessEvent.sessionCreated:
            return [
                "[session] \(data["agent"]?["brain"]?["provider"]?.stringValue ?? "?") \(data["agent"]?["brain"]?["model"]?.stringValue ?? "")"
            ]
        case HarnessEvent.userMessage:
            return ["[user] " + clip(data["text"]?.stringValue ?? "", 400)]
        case HarnessEvent.harnessWoke:
            let repairs = (data["repairs"]?.arrayValue ?? []).map {
                "\($0["name"]?.stringValue ?? "?"): \($0["action"]?.stringValue ?? "?")"
            }
            let head = data["head"]?.intValue ?? 0
            return [
                "[harness] took the session at event \(head), lease epoch \(data["epoch"]?.intValue ?? 0)"
                    + (repairs.isEmpty ? "" : "; repairs: " + repairs.joined(separator: ", "))
            ]
        case HarnessEvent.brainResponse:
            let turn = data["turn"]?.intValue ?? 0
            let usage = "\(data["usage"]?["input"]?.intValue ?? 0) in, \(data["usage"]?["output"]?.intValue ?? 0) out"
            var lines: [String] = []
            let blocks = data["content"]?.arrayValue ?? []
            let text = blocks.compactMap { $0["type"]?.stringValue == "text" ? $0["text"]?.stringValue : nil }.joined(
                separator: "\n")
            lines.append("[brain] turn \(turn) (\(usage) tokens)" + (text.isEmpty ? "" : ": " + clip(text, 2000)))
            return lines
        case HarnessEvent.brainError:
            let status = data["status"]?.intValue.map { ", HTTP \($0)" } ?? ""
            let then =
                data["final"]?.boolValue == true
                ? "giving up"
                : "retrying in \(String(format: "%.1f", Double(data["retryInMs"]?.intValue ?? 0) / 1000)) s"
            return [
                "[brain error] \(data["kind"]?.stringValue ?? "?")\(status): \(clip(data["message"]?.stringValue ?? "", 300)) (\(then))"
            ]
        case HarnessEvent.toolIntent:
            let name = data["name"]?.stringValue ?? "?"
            let sandbox = data["sandbox"]?.stringValue.map { " [\($0)]" } ?? ""
            var input = data["input"] ?? .null
            if name == "sandbox_tool", let inner = input["input"] { input = inner }
            let summary: String
            switch data["tool"]?.stringValue ?? name {
            case "bash": summary = "$ " + (input["command"]?.stringValue ?? JSONCodec.string(input))
            case "str_replace_based_edit_tool":
                summary = "\(input["command"]?.stringValue ?? "?") \(input["path"]?.stringValue ?? "")"
            default: summary = JSONCodec.string(input)
            }
            return ["[tool] \(name)\(sandbox) " + clip(summary, 300)]
        case HarnessEvent.toolResult:
            let status = data["status"]?.stringValue ?? "?"
            let text = data["text"]?.stringValue ?? ""
            var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            if lines.last == "" { lines.removeLast() }
            let shown = lines.prefix(12).map { "    " + clip($0, 200) }
            let more = lines.count > 12 ? ["    ... (\(lines.count - 12) more lines)"] : []
            let label = status == "ok" ? "" : " " + status.uppercased()
            return ["  [result\(label)]" + (data["rerun"]?.boolValue == true ? " (run again after a wake)" : "")]
                + shown + more
        case HarnessEvent.sandboxProvisioned:
            let replaces = data["replaces"]?.stringValue.map { ", replacing \($0)" } ?? ""
            return [
                "[sandbox] \(data["name"]?.stringValue ?? "?") is \(data["sandbox"]?.stringValue ?? "?") (\(data["path"]?.stringValue ?? "?"), \(Int(data["ms"]?.doubleValue ?? 0)) ms\(replaces))"
            ]
        case HarnessEvent.sandboxLost:
            return [
                "[sandbox] \(data["name"]?.stringValue ?? "?") (\(data["sandbox"]?.stringValue ?? "?")) lost: \(data["reason"]?.stringValue ?? "?")"
            ]
        case HarnessEvent.contextCompacted:
            return [
                "[context] compacted: \(data["tokensBefore"]?.intValue ?? 0) -> \(data["tokensAfter"]?.intValue ?? 0) tokens"
            ]
        case HarnessEvent.sessionEnded:
            return ["[end] \(data["reason"]?.stringValue ?? "?") after \(data["turns"]?.intValue ?? 0) turns"]
        default:
            return ["[\(event.type)]"]
        }
    }

    static func clip(_ text: String, _ limit: Int) -> String {
        text.count > limit ? String(text.prefix(limit)) + "..." : text
    }
}
