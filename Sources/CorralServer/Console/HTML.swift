import CorralCore
import CorralHost

/// A fragment of HTML the console may send as it is. The only ways to make one are string
/// literals written in this module (trusted markup) and interpolation, where every value that
/// is not itself `HTML` is escaped. So text from events, ids and error messages can only
/// reach a page escaped: forgetting to escape does not compile, it escapes.
///
/// The console renders its pages with this rather than a template engine: a template engine
/// (swift-mustache) escapes too, but would be one more package, templates loaded from
/// resources or strings without type checks, and the logic would still live in Swift view
/// models. Here the markup sits beside the code that fills it, and the compiler checks both.
struct HTML: Sendable, Hashable, ExpressibleByStringInterpolation, CustomStringConvertible {
    private(set) var text: String

    init(stringLiteral literal: String) { text = literal }

    init(stringInterpolation: StringInterpolation) { text = stringInterpolation.text }

    /// Markup made by this module's own code, never from outside data. Named so that a review
    /// finds every use.
    init(trusted markup: String) { text = markup }

    static let empty: HTML = ""

    var description: String { text }

    static func + (lhs: HTML, rhs: HTML) -> HTML { HTML(trusted: lhs.text + rhs.text) }

    static func += (lhs: inout HTML, rhs: HTML) { lhs.text += rhs.text }

    struct StringInterpolation: StringInterpolationProtocol {
        var text: String

        init(literalCapacity: Int, interpolationCount: Int) {
            text = ""
            text.reserveCapacity(literalCapacity + interpolationCount * 16)
        }

        mutating func appendLiteral(_ literal: String) { text += literal }

        mutating func appendInterpolation(_ html: HTML) { text += html.text }

        mutating func appendInterpolation(_ fragments: [HTML]) {
            for fragment in fragments { text += fragment.text }
        }

        /// Text: escaped, and shown as `Display` shows it (control characters visible).
        mutating func appendInterpolation(_ value: String) { text += Display.escape(value) }

        mutating func appendInterpolation(_ value: Substring) { text += Display.escape(String(value)) }

        mutating func appendInterpolation<ID: CorralIdentifier>(_ id: ID) { text += Display.escape(id.rawValue) }

        mutating func appendInterpolation(_ value: Int) { text += String(value) }

        mutating func appendInterpolation(_ value: UInt64) { text += String(value) }

        mutating func appendInterpolation(_ value: Int64) { text += String(value) }
    }
}

extension Array where Element == HTML {
    func joined(separator: HTML = .empty) -> HTML {
        var out = HTML.empty
        for (index, fragment) in enumerated() {
            if index > 0 { out += separator }
            out += fragment
        }
        return out
    }
}
