import CorralCore
import CorralSession
import Foundation
import Testing

@testable import CorralServer

@Suite("Console: hostile text is shown as text")
struct ConsoleEscapingTests {
    /// The hostile events' markup, as it would look had it reached a page unescaped.
    static let dangerous = ["<script>alert", "<img src=x", "\"><img", "onerror=alert(1)>"]

    static func expectInert(_ html: String, sourceLocation: SourceLocation = #_sourceLocation) {
        for fragment in dangerous {
            #expect(
                !html.contains(fragment), "'\(fragment)' reached the page: \(html.prefix(300))",
                sourceLocation: sourceLocation)
        }
    }

    @Test("tags, quotes and ampersands are escaped wherever text is interpolated, attributes included")
    func interpolation() {
        let text = HostileEvents.script + HostileEvents.breakout + "&amp; 'single'"
        let html: HTML = "<p title=\"\(text)\">\(text)</p>"
        Self.expectInert(html.text)
        #expect(html.text.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"))
        #expect(html.text.contains("&amp;amp;"))
        // The only markup is the literal's own.
        #expect(html.text.filter { $0 == "<" }.count == 2)
        #expect(html.text.filter { $0 == "\"" }.count == 2)
    }

    @Test("control characters, direction overrides and separators show as visible symbols")
    func controls() {
        let shown = Display.escape(HostileEvents.controls + "\u{2028}\u{9B}\r")
        #expect(shown.contains("\u{2407}"), "BEL as ␇")
        #expect(shown.contains("\u{241B}[31m"), "ESC as ␛")
        #expect(shown.contains("\u{2400}"), "NUL as ␀")
        #expect(shown.contains("\u{2421}"), "DEL as ␡")
        #expect(shown.contains("\u{27E8}U+202E\u{27E9}"), "RLO named")
        #expect(shown.contains("\u{27E8}U+2028\u{27E9}") && shown.contains("\u{27E8}U+009B\u{27E9}"))
        for scalar in shown.unicodeScalars {
            let value = scalar.value
            let invisible =
                (value < 0x20 && value != 0x0A && value != 0x09) || (0x7F...0x9F).contains(value)
                || (0x202A...0x202E).contains(value) || (0x2066...0x2069).contains(value)
            #expect(!invisible, "U+\(String(value, radix: 16)) left as it was")
        }
        #expect(Display.escape("plain text, nothing to do") == "plain text, nothing to do")
        #expect(Display.escape("naïve 日本語 🙂") == "naïve 日本語 🙂", "other text passes unchanged")
    }

    @Test("a huge line is cut in the middle, with a marker that says how much went")
    func hugeLines() {
        let cut = Display.text(HostileEvents.hugeLine + "END", limit: 8000).text
        #expect(cut.count < 8200)
        #expect(cut.contains("292,003 characters cut"), "\(cut.count)")
        #expect(cut.hasSuffix("END"), "the end is kept")
        let line = Display.line(String(repeating: "ab\n", count: 10_000), limit: 160).text
        #expect(!line.contains("\n"))
        #expect(line.contains("\u{23CE}"), "newlines shown as ⏎")
        #expect(line.count < 600)
        let json = JSONView.render(["text": .string(HostileEvents.hugeLine)], stringLimit: 1000)
        #expect(!json.complete)
        #expect(json.text.count < 1200)
    }

    @Test("the JSON view writes control and direction characters as \\u escapes")
    func jsonView() {
        let view = JSONView.render(["a": .string(HostileEvents.controls), "b": [1, 2.5, true, nil]]).text
        #expect(view.contains("\\u0007") && view.contains("\\u001b") && view.contains("\\u0000"))
        #expect(view.contains("\\u202e") && view.contains("\\u007f"))
        #expect(view.contains("\"b\": [\n    1,\n    2.5,\n    true,\n    null\n  ]"))
        #expect(!view.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" })
    }

    @Test("every row of a hostile session holds no markup of the events', and unknown outcomes are marked")
    func rows() throws {
        let session = SessionID(unchecked: "se-hostile")
        var previous: Date?
        var html = ""
        for (index, event) in HostileEvents.all.enumerated() {
            let stored = Event(
                seq: UInt64(index + 1), id: event.id ?? EventID(unchecked: "e\(index)"), type: event.type,
                time: Date(timeIntervalSince1970: 1_700_000_000 + Double(index)), epoch: 1, data: event.data)
            let row = EventRow(session: session, event: stored, previousTime: previous, open: true).render().text
            Self.expectInert(row)
            #expect(row.hasPrefix("<li class=\"ev t-"), "\(row.prefix(80))")
            #expect(row.components(separatedBy: "<li").count == 2, "one row, one li")
            #expect(row.components(separatedBy: "</details></li>").count == 2)
            html += row
            previous = stored.time
        }
        #expect(html.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"))
        #expect(html.contains("unknown outcome"), "an unknown outcome is marked as such")
        #expect(html.contains("may have run fully, partly or not at all"))
        #expect(html.contains("characters cut"))
        #expect(html.contains("data-result-for=\"&quot;&gt;&lt;img src=x onerror=alert(1)&gt;\""))
        #expect(html.contains("1,200 in / 80 out tokens"))
    }

    @Test("a summary counts turns, tokens, tool outcomes and where the time went")
    func summary() {
        var summary = SessionSummary()
        let start = Date(timeIntervalSince1970: 1_700_000_000)
        func event(_ seq: UInt64, _ type: String, _ seconds: Double, _ data: JSONValue) -> Event {
            Event(
                seq: seq, id: EventID(unchecked: "e\(seq)"), type: type, time: start.addingTimeInterval(seconds),
                epoch: 1, data: data)
        }
        summary.fold([
            event(1, "session.created", 0, ["agent": ["brain": ["provider": "anthropic", "model": "m"]]]),
            event(2, "user.message", 0, ["text": "task"]),
            event(3, "brain.response", 2, ["usage": ["input": 100, "output": 10]]),
            event(
                4, "tool.intent", 2, ["toolUseID": "t1", "name": "bash", "sandbox": "main", "input": ["command": "ls"]]),
            event(5, "sandbox.provisioned", 2.3, ["name": "main", "sandbox": "sb-one", "path": "warm", "ms": 300]),
            event(
                6, "tool.result", 2.5,
                ["toolUseID": "t1", "name": "bash", "status": "ok", "ms": 200, "sandboxID": "sb-one"]),
            event(7, "brain.response", 4.5, ["usage": ["input": 200, "output": 20]]),
            event(
                8, "tool.intent", 4.5,
                ["toolUseID": "t2", "name": "bash", "sandbox": "main", "input": ["command": "rm -rf x"]]),
            event(9, "harness.woke", 10, ["brain": "anthropic m2"]),
            event(10, "tool.result", 10, ["toolUseID": "t2", "name": "bash", "status": "unknown"]),
            event(11, "session.ended", 11, ["reason": "end_turn"]),
            event(12, "user.message", 71, ["text": "more"]),
        ])
        #expect(summary.turns == 2 && summary.tokensIn == 300 && summary.tokensOut == 30)
        #expect(summary.brain == "anthropic · m2")
        #expect(summary.task == "task")
        #expect(!summary.ended, "a user message after the end starts it again")
        #expect(summary.unknownResults == 1 && summary.tools["bash"]?.calls == 2)
        #expect(summary.brainMilliseconds == 4000)
        #expect(summary.toolMilliseconds == 200 && summary.provisionMilliseconds == 300)
        #expect(summary.idleMilliseconds == 60_000, "the wait after the end is not active time")
        #expect(summary.activeMilliseconds == 11_000)
        let commands = summary.commands[SandboxID(unchecked: "sb-one")] ?? []
        #expect(commands.map(\.preview) == ["ls", "rm -rf x"])
        #expect(commands.map(\.status) == ["ok", "unknown"])
        #expect(summary.openIntents.isEmpty)
        // Folding the same events again changes nothing: a summary is brought up to date by
        // reading only what came after its head.
        let before = summary.head
        summary.fold([event(3, "brain.response", 2, ["usage": ["input": 100, "output": 10]])])
        #expect(summary.head == before && summary.tokensIn == 300)
    }
}
