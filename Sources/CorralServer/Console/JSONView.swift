import CorralCore
import CorralHost

/// An event as indented JSON for reading in a page: keys sorted, every control and
/// direction-changing character as a `\u` escape, long strings cut in the middle, and the
/// whole cut off past a limit (the page links to the event's full JSON).
enum JSONView {
    struct Rendered {
        var text: String
        /// False when strings were shortened or the output stopped at the limit.
        var complete: Bool
    }

    static func render(_ value: JSONValue, stringLimit: Int = 2000, totalLimit: Int = 24_000) -> Rendered {
        var writer = Writer(stringLimit: stringLimit, totalLimit: totalLimit)
        writer.write(value, indent: 0)
        if writer.stopped { writer.out += "\n… (cut: open the whole event as JSON)" }
        return Rendered(text: writer.out, complete: !writer.stopped && !writer.shortened)
    }

    private struct Writer {
        let stringLimit: Int
        let totalLimit: Int
        var out = ""
        var stopped = false
        var shortened = false

        init(stringLimit: Int, totalLimit: Int) {
            self.stringLimit = stringLimit
            self.totalLimit = totalLimit
        }

        mutating func write(_ value: JSONValue, indent: Int) {
            if out.utf8.count > totalLimit {
                stopped = true
                return
            }
            switch value {
            case .null: out += "null"
            case .bool(let flag): out += flag ? "true" : "false"
            case .int(let number): out += String(number)
            case .double(let number): out += number.isFinite ? String(number) : "null"
            case .string(let text): string(text)
            case .array(let items):
                guard !items.isEmpty else {
                    out += "[]"
                    return
                }
                out += "[\n"
                for (index, item) in items.enumerated() {
                    guard !stopped else { return }
                    pad(indent + 1)
                    write(item, indent: indent + 1)
                    out += index == items.count - 1 ? "\n" : ",\n"
                }
                pad(indent)
                out += "]"
            case .object(let members):
                guard !members.isEmpty else {
                    out += "{}"
                    return
                }
                out += "{\n"
                let sorted = members.sorted { $0.key < $1.key }
                for (index, member) in sorted.enumerated() {
                    guard !stopped else { return }
                    pad(indent + 1)
                    string(member.key)
                    out += ": "
                    write(member.value, indent: indent + 1)
                    out += index == sorted.count - 1 ? "\n" : ",\n"
                }
                pad(indent)
                out += "}"
            }
        }

        mutating func pad(_ indent: Int) {
            out += String(repeating: "  ", count: min(indent, 40))
        }

        mutating func string(_ text: String) {
            out += "\""
            if let (head, tail, cut) = Display.split(text, limit: stringLimit) {
                shortened = true
                escape(head)
                out += " … \(Display.grouped(cut)) characters cut … "
                escape(tail)
            } else {
                escape(text)
            }
            out += "\""
        }

        mutating func escape(_ text: String) {
            for scalar in text.unicodeScalars {
                switch scalar.value {
                case 0x22: out += "\\\""
                case 0x5C: out += "\\\\"
                case 0x0A: out += "\\n"
                case 0x0D: out += "\\r"
                case 0x09: out += "\\t"
                case 0x00...0x1F, 0x7F...0x9F, 0x061C, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069, 0x2028,
                    0x2029, 0xFEFF:
                    out += "\\u" + String(scalar.value, radix: 16).leftPadded(to: 4)
                default: out.unicodeScalars.append(scalar)
                }
            }
        }
    }
}
