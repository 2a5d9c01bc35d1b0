import Foundation

/// How outside text is shown: escaped for HTML, with characters that would hide or reorder
/// text made visible, and cut when long. Events hold whatever an agent wrote (a `<script>`
/// tag, escape sequences, a megabyte on one line), and the console shows all of it as text.
enum Display {
    /// Escapes `text` for an element or a quoted attribute, and shows control characters: C0
    /// controls (but newline and tab) as their Unicode control pictures (`␛`), DEL as `␡`,
    /// and C1 controls, bidirectional overrides and isolates, and line and paragraph
    /// separators as `⟨U+202E⟩`, so that nothing can recolour a terminal-like view, reverse
    /// the text around it, or hide itself. The result holds no markup of its own, so it is
    /// safe in either context.
    static func escape(_ text: String) -> String {
        // The common case, text with nothing to replace, costs one pass and no copy.
        if !text.utf8.contains(where: needsWork) { return text }
        var out = ""
        out.reserveCapacity(text.utf8.count + 16)
        for scalar in text.unicodeScalars {
            switch scalar.value {
            case 0x26: out += "&amp;"
            case 0x3C: out += "&lt;"
            case 0x3E: out += "&gt;"
            case 0x22: out += "&quot;"
            case 0x27: out += "&#39;"
            case 0x09, 0x0A: out.unicodeScalars.append(scalar)
            case 0x0D: out += "\u{240D}"
            case 0x00...0x1F: out.unicodeScalars.append(Unicode.Scalar(0x2400 + scalar.value) ?? "?")
            case 0x7F: out += "\u{2421}"
            case 0x80...0x9F, 0x061C, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069, 0x2028, 0x2029, 0xFEFF:
                out += "\u{27E8}U+" + String(scalar.value, radix: 16, uppercase: true).leftPadded(to: 4) + "\u{27E9}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// Bytes that start something `escape` changes: markup characters, controls, and the lead
    /// bytes of the multi-byte characters it shows (C1: 0xC2; U+061C: 0xD8; U+2xxx: 0xE2; BOM:
    /// 0xEF). Other multi-byte text passes through the slow path unchanged, at a small cost.
    private static func needsWork(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x26, 0x3C, 0x3E, 0x22, 0x27, 0x00...0x08, 0x0B...0x1F, 0x7F, 0xC2, 0xD8, 0xE2, 0xEF: true
        default: false
        }
    }

    /// `text`, cut in the middle when it has more than `limit` characters (Unicode scalars),
    /// escaped, with a marker saying how much was cut.
    static func text(_ text: String, limit: Int) -> HTML {
        guard let (head, tail, cut) = split(text, limit: limit) else { return "\(text)" }
        return "\(head)<span class=\"cut\"> … \(grouped(cut)) characters cut … </span>\(tail)"
    }

    /// One line for a summary: newlines shown as `⏎`, tabs as spaces, runs of spaces kept
    /// short, cut at the end past `limit` characters.
    static func line(_ text: String, limit: Int) -> HTML {
        var flat = ""
        flat.reserveCapacity(min(text.utf8.count, limit * 4))
        var count = 0
        var lastWasSpace = false
        var cut = false
        for scalar in text.unicodeScalars {
            if count >= limit {
                cut = true
                break
            }
            switch scalar {
            case "\n":
                flat += " \u{23CE} "
                lastWasSpace = true
            case "\t", " ", "\r":
                if lastWasSpace { continue }
                flat += " "
                lastWasSpace = true
            default:
                flat.unicodeScalars.append(scalar)
                lastWasSpace = false
            }
            count += 1
        }
        return cut ? "\(flat)<span class=\"cut\">…</span>" : "\(flat)"
    }

    static func split(_ text: String, limit: Int) -> (head: String, tail: String, cut: Int)? {
        let scalars = text.unicodeScalars
        // Counting is linear; most text is short, and a string's UTF-8 length bounds its count.
        guard text.utf8.count > limit else { return nil }
        let count = scalars.count
        guard count > limit else { return nil }
        let keepTail = limit / 4
        let keepHead = limit - keepTail
        let headEnd = scalars.index(scalars.startIndex, offsetBy: keepHead)
        let tailStart = scalars.index(scalars.endIndex, offsetBy: -keepTail)
        return (
            String(scalars[scalars.startIndex..<headEnd]), String(scalars[tailStart..<scalars.endIndex]),
            count - keepHead - keepTail
        )
    }

    /// 12345 as `12,345`.
    static func grouped(_ number: Int) -> String {
        let digits = String(number.magnitude)
        var out = ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { out.append(",") }
            out.append(digit)
        }
        return number < 0 ? "-" + out : out
    }

    static func grouped(_ number: Int64) -> String { grouped(Int(clamping: number)) }

    /// Milliseconds as `840 ms`, `2.4 s`, `3 min 12 s`, `2 h 5 min`.
    static func duration(milliseconds: Double) -> String {
        guard milliseconds.isFinite, milliseconds >= 0 else { return "–" }
        if milliseconds < 1 { return String(format: "%.2f ms", milliseconds) }
        if milliseconds < 1000 { return "\(Int(milliseconds.rounded())) ms" }
        let seconds = milliseconds / 1000
        if seconds < 60 { return String(format: "%.1f s", seconds) }
        let whole = Int(seconds.rounded())
        if whole < 3600 { return "\(whole / 60) min \(whole % 60) s" }
        return "\(whole / 3600) h \(whole % 3600 / 60) min"
    }

    /// A time of day in UTC with milliseconds: `14:03:05.123`.
    static func clock(_ date: Date) -> String {
        let components = utc.dateComponents([.hour, .minute, .second, .nanosecond], from: date)
        return String(
            format: "%02d:%02d:%02d.%03d", components.hour ?? 0, components.minute ?? 0, components.second ?? 0,
            (components.nanosecond ?? 0) / 1_000_000)
    }

    /// A date and time in UTC, to the second: `2025-01-31 14:03:05`.
    static func dateTime(_ date: Date) -> String {
        let components = utc.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        return String(
            format: "%04d-%02d-%02d %02d:%02d:%02d", components.year ?? 0, components.month ?? 0,
            components.day ?? 0, components.hour ?? 0, components.minute ?? 0, components.second ?? 0)
    }

    /// How long ago, coarse: `12 s`, `4 min`, `3 h`, `2 d`.
    static func age(since date: Date, now: Date) -> String {
        let seconds = max(0, Int(now.timeIntervalSince(date)))
        if seconds < 60 { return "\(seconds) s" }
        if seconds < 3600 { return "\(seconds / 60) min" }
        if seconds < 86400 { return "\(seconds / 3600) h" }
        return "\(seconds / 86400) d"
    }

    /// Bytes as `512 MiB`, `1.5 GiB`.
    static func bytes(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return value == value.rounded() ? "\(Int(value)) \(units[unit])" : String(format: "%.1f %@", value, units[unit])
    }

    static let utc: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC") ?? calendar.timeZone
        return calendar
    }()
}

extension String {
    func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}
