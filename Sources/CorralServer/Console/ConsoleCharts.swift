import Foundation

/// Charts as SVG drawn on the server: readable without the script, coloured by the style
/// sheet (no inline styles, which the console's content security policy forbids).
enum ConsoleCharts {
    /// Where a session's time went: one bar split into brain, tools, provisioning and the
    /// rest, with a legend in words.
    static func strip(_ summary: SessionSummary) -> HTML {
        let active = summary.activeMilliseconds
        let brain = summary.brainMilliseconds
        let tools = summary.toolMilliseconds
        let provision = summary.provisionMilliseconds
        let other = max(0, active - brain - tools - provision)
        let total = max(active, brain + tools + provision)
        let parts: [(String, String, Double)] = [
            ("brain", "brain calls", brain), ("tools", "tool calls", tools),
            ("provision", "provisioning", provision), ("other", "harness and waiting", other),
        ]
        guard total > 0 else {
            return
                "<figure class=\"strip\"><figcaption>Where the time went</figcaption><p class=\"muted\">No time recorded yet.</p></figure>"
        }
        var x = 0.0
        var rects: [HTML] = []
        var legend: [HTML] = []
        var label: [String] = []
        for (key, name, milliseconds) in parts {
            let share = milliseconds / total
            let width = share * 1000
            let words = "\(name) \(Display.duration(milliseconds: milliseconds)) (\(Int((share * 100).rounded()))%)"
            if width > 0 {
                rects.append(
                    "<rect class=\"seg-\(key)\" x=\"\(format(x))\" y=\"0\" width=\"\(format(width))\" height=\"24\"><title>\(words)</title></rect>"
                )
            }
            legend.append("<li><span class=\"key seg-\(key)\"></span>\(words)</li>")
            label.append(words)
            x += width
        }
        return """
            <figure class="strip"><figcaption>Where the time went: \(Display.duration(milliseconds: total)) active</figcaption>
            <svg viewBox="0 0 1000 24" preserveAspectRatio="none" role="img" aria-label="\(label.joined(separator: ", "))">\
            \(rects)</svg>
            <ul class="legend">\(legend)</ul></figure>
            """
    }

    struct Series {
        var name: String
        var points: [(Date, Double?)]
    }

    /// A line chart of `series` over time (at most four series), with the latest values in
    /// words in its caption so that it reads without the picture.
    static func lines(title: String, unit: String, series: [Series], id: String) -> HTML {
        let width = 600.0
        let height = 170.0
        let left = 52.0
        let bottom = 26.0
        let top = 12.0
        let times = series.flatMap { $0.points.map(\.0) }
        let values = series.flatMap { $0.points.compactMap(\.1) }
        let latest = series.map { item -> String in
            let last = item.points.last(where: { $0.1 != nil })?.1
            return "\(item.name) \(last.map { number($0) } ?? "–")\(unit.isEmpty ? "" : " " + unit)"
        }
        guard let start = times.min(), let end = times.max() else {
            return """
                <figure class="chart" id="\(id)"><figcaption>\(title)</figcaption>\
                <p class="muted">No samples yet: the service samples every few seconds.</p></figure>
                """
        }
        let maximum = max(1, (values.max() ?? 1) * 1.1)
        let span = max(end.timeIntervalSince(start), 1)
        func px(_ time: Date) -> Double { left + (width - left - 6) * time.timeIntervalSince(start) / span }
        func py(_ value: Double) -> Double { top + (height - top - bottom) * (1 - value / maximum) }
        var drawn: [HTML] = []
        for (index, item) in series.prefix(4).enumerated() {
            let points = item.points.compactMap { time, value in value.map { (px(time), py($0)) } }
            let css = "line-\(index + 1)"
            if points.count == 1, let point = points.first {
                drawn.append("<circle class=\"\(css)\" cx=\"\(format(point.0))\" cy=\"\(format(point.1))\" r=\"3\"/>")
            } else if points.count > 1 {
                let text = points.map { "\(format($0.0)),\(format($0.1))" }.joined(separator: " ")
                drawn.append("<polyline class=\"\(css)\" points=\"\(text)\"/>")
            }
        }
        let legend: [HTML] = series.prefix(4).enumerated().map { index, item in
            "<li><span class=\"key line-\(index + 1)\"></span>\(item.name)</li>"
        }
        let bottomY = height - bottom
        return """
            <figure class="chart" id="\(id)"><figcaption>\(title)</figcaption>
            <svg viewBox="0 0 \(Int(width)) \(Int(height))" role="img" aria-label="\(title): \(latest.joined(separator: ", "))">\
            <line class="axis" x1="\(format(left))" y1="\(format(bottomY))" x2="\(format(width))" y2="\(format(bottomY))"/>\
            <line class="axis" x1="\(format(left))" y1="\(format(top))" x2="\(format(left))" y2="\(format(bottomY))"/>\
            <text x="\(format(left - 4))" y="\(format(top + 10))" text-anchor="end">\(number(maximum))</text>\
            <text x="\(format(left - 4))" y="\(format(bottomY))" text-anchor="end">0</text>\
            <text x="\(format(left))" y="\(format(height - 6))">\(Display.clock(start).prefix(8))</text>\
            <text x="\(format(width))" y="\(format(height - 6))" text-anchor="end">\(Display.clock(end).prefix(8)) UTC</text>\
            \(drawn)</svg>
            <ul class="legend">\(legend)</ul>
            <p class="muted">Latest: \(latest.joined(separator: " · "))</p></figure>
            """
    }

    static func format(_ value: Double) -> String { String(format: "%.1f", value) }

    static func number(_ value: Double) -> String {
        value >= 100 || value == value.rounded() ? String(Int(value.rounded())) : String(format: "%.1f", value)
    }
}
