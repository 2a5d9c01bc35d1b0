extension Duration {
    /// Parses `500ms`, `30s`, `15m`, `1h30m`, `2d`, or a bare number of seconds.
    public init(parsing text: String) throws {
        let input = text.trimmingSpaces.lowercased()
        func fail(_ why: String) -> CorralError {
            CorralError.invalidArgument(
                "invalid duration '\(text)': \(why)", hint: "use a duration such as 30s, 15m or 1h30m")
        }
        guard !input.isEmpty else { throw fail("it is empty") }
        if let seconds = Double(input) {
            guard seconds.isFinite, seconds >= 0 else { throw fail("it must be a non-negative number") }
            guard seconds * 1000 < Double(Int64.max) / 2 else { throw fail("too large") }
            self = .milliseconds(Int64((seconds * 1000).rounded()))
            return
        }
        var total: Double = 0  // milliseconds
        var rest = Substring(input)
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isNumber || $0 == "." }
            guard let value = Double(digits), !digits.isEmpty else { throw fail("expected a number at '\(rest)'") }
            rest = rest.dropFirst(digits.count)
            let unit = rest.prefix { $0.isLetter }
            rest = rest.dropFirst(unit.count)
            switch unit {
            case "ms": total += value
            case "s": total += value * 1000
            case "m": total += value * 60_000
            case "h": total += value * 3_600_000
            case "d": total += value * 86_400_000
            case "": throw fail("'\(digits)' needs a unit (ms, s, m, h or d)")
            default: throw fail("unknown unit '\(unit)'")
            }
        }
        guard total < Double(Int64.max) / 2 else { throw fail("too large") }
        self = .milliseconds(Int64(total.rounded()))
    }

    /// Whole seconds, rounded up, for APIs that take seconds.
    public var wholeSecondsRoundedUp: Int64 {
        let (seconds, attoseconds) = components
        return attoseconds > 0 ? seconds + 1 : seconds
    }

    /// Milliseconds as a Double, for reports.
    public var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }

    /// A compact spelling that `init(parsing:)` reads back: `1h30m`, `45s`, `250ms`.
    public var compactDescription: String {
        var ms = Int64(milliseconds.rounded())
        if ms == 0 { return "0s" }
        var parts = ""
        for (unit, size) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] where ms >= size {
            parts += "\(ms / size)\(unit)"
            ms %= size
        }
        if ms > 0 { parts += "\(ms)ms" }
        return parts
    }
}
