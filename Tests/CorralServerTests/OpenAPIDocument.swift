import CorralCore
import Foundation
import Yams

/// docs/openapi.yaml, read for the tests: its operations, and a checker for the subset of JSON
/// Schema the document uses ($ref, type, properties, required, items, additionalProperties,
/// enum, oneOf, allOf, minimum, format date-time).
struct OpenAPIDocument: Sendable {
    struct Operation: Sendable, Hashable, CustomStringConvertible {
        var method: String
        var path: String
        var id: String
        var authenticated: Bool
        /// Documented status codes, as the document spells them ("200", "404"); `default` is left out.
        var statuses: Set<String>
        var description: String { "\(method) \(path) (\(id))" }
    }

    let root: JSONValue

    static var fileURL: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("docs/openapi.yaml")
    }

    init() throws {
        let text = try String(contentsOf: Self.fileURL, encoding: .utf8)
        guard let loaded = try Yams.load(yaml: text) else { throw DocumentError("docs/openapi.yaml is empty") }
        root = try Self.json(loaded, at: "")
    }

    static let methods = ["get", "put", "post", "delete", "patch", "head", "options"]

    var operations: [Operation] {
        guard case .object(let paths)? = root["paths"] else { return [] }
        let globalSecurity = root["security"]?.arrayValue?.isEmpty == false
        var found: [Operation] = []
        for (path, item) in paths {
            for method in Self.methods {
                guard let operation = item[method] else { continue }
                let security = operation["security"]?.arrayValue.map { !$0.isEmpty } ?? globalSecurity
                let statuses = Set(operation["responses"]?.objectValue?.keys.filter { $0 != "default" } ?? [])
                found.append(
                    Operation(
                        method: method.uppercased(), path: path, id: operation["operationId"]?.stringValue ?? "",
                        authenticated: security, statuses: statuses))
            }
        }
        return found.sorted { ($0.path, $0.method) < ($1.path, $1.method) }
    }

    func operation(_ id: String) throws -> Operation {
        guard let found = operations.first(where: { $0.id == id }) else {
            throw DocumentError("no operation \(id) in the document")
        }
        return found
    }

    /// The documented response for a status: its media types and their schemas.
    func response(_ id: String, status: Int) throws -> JSONValue? {
        let operation = try operation(id)
        guard let raw = root["paths"]?[operation.path]?[operation.method.lowercased()]?["responses"]?[String(status)]
        else {
            return nil
        }
        return try resolve(raw)
    }

    /// Follows `$ref` (local references only).
    func resolve(_ value: JSONValue) throws -> JSONValue {
        guard let reference = value["$ref"]?.stringValue else { return value }
        guard reference.hasPrefix("#/") else {
            throw DocumentError("only local references are supported: \(reference)")
        }
        var node = root
        for component in reference.dropFirst(2).split(separator: "/") {
            guard let next = node[String(component)] else { throw DocumentError("dangling reference \(reference)") }
            node = next
        }
        return try resolve(node)
    }

    /// Every way `value` breaks `schema`, with JSON-pointer-like locations. Objects whose schema
    /// lists `properties` and says nothing of `additionalProperties` may hold no other key: a
    /// field the service sends must be documented.
    func problems(_ value: JSONValue, against schema: JSONValue, at location: String = "$") throws -> [String] {
        let schema = try resolve(schema)
        var problems: [String] = []
        if let parts = schema["allOf"]?.arrayValue {
            for part in parts { problems += try self.problems(value, against: part, at: location) }
        }
        if let choices = schema["oneOf"]?.arrayValue {
            let matching = try choices.filter { try self.problems(value, against: $0, at: location).isEmpty }.count
            if matching != 1 { problems.append("\(location): matches \(matching) of oneOf's \(choices.count) schemas") }
        }
        if let allowed = schema["enum"]?.arrayValue, !allowed.contains(value) {
            problems.append("\(location): \(value) is not one of \(allowed)")
        }
        guard let type = schema["type"]?.stringValue else { return problems }
        switch (type, value) {
        case ("object", .object(let members)):
            let properties = schema["properties"]?.objectValue ?? [:]
            for key in schema["required"]?.arrayValue?.compactMap(\.stringValue) ?? [] where members[key] == nil {
                problems.append("\(location): '\(key)' is required but missing")
            }
            for (key, member) in members {
                if let property = properties[key] {
                    problems += try self.problems(member, against: property, at: "\(location).\(key)")
                } else if let additional = schema["additionalProperties"] {
                    if additional == .bool(false) {
                        problems.append("\(location): '\(key)' is not allowed")
                    } else if additional.objectValue != nil {
                        problems += try self.problems(member, against: additional, at: "\(location).\(key)")
                    }
                } else if !properties.isEmpty {
                    problems.append("\(location): '\(key)' is not documented")
                }
            }
        case ("array", .array(let items)):
            if let itemSchema = schema["items"] {
                for (index, item) in items.enumerated() {
                    problems += try self.problems(item, against: itemSchema, at: "\(location)[\(index)]")
                }
            }
        case ("string", .string(let text)):
            if schema["format"]?.stringValue == "date-time", !Self.isDateTime(text) {
                problems.append("\(location): '\(text)' is not an ISO 8601 date-time")
            }
            if let pattern = schema["pattern"]?.stringValue, text.range(of: pattern, options: .regularExpression) == nil
            {
                problems.append("\(location): '\(text)' does not match \(pattern)")
            }
        case ("integer", .int(let number)):
            if let minimum = schema["minimum"]?.doubleValue, Double(number) < minimum {
                problems.append("\(location): \(number) is below the minimum \(minimum)")
            }
        case ("integer", .double(let number)) where number.rounded() == number:
            break
        case ("number", .int), ("number", .double), ("boolean", .bool):
            break
        default:
            problems.append("\(location): expected \(type), got \(value.typeName)")
        }
        return problems
    }

    /// YAML as Yams loads it, turned into a `JSONValue`; keys must be strings (quote status codes).
    static func json(_ value: Any, at location: String) throws -> JSONValue {
        switch value {
        case let text as String: return .string(text)
        case let flag as Bool: return .bool(flag)
        case let number as Int: return .int(Int64(number))
        case let number as Double: return .double(number)
        case let list as [Any]:
            return .array(try list.enumerated().map { try json($0.element, at: "\(location)[\($0.offset)]") })
        case let map as [AnyHashable: Any]:
            var members: [String: JSONValue] = [:]
            for (key, member) in map {
                guard let name = key.base as? String else {
                    throw DocumentError("\(location): the key \(key) is not a string; quote it")
                }
                members[name] = try json(member, at: "\(location)/\(name)")
            }
            return .object(members)
        case let map as [String: Any]:
            return try json(Dictionary(uniqueKeysWithValues: map.map { (AnyHashable($0.key), $0.value) }), at: location)
        case is NSNull: return .null
        default: throw DocumentError("\(location): cannot read \(type(of: value))")
        }
    }
}

struct DocumentError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension OpenAPIDocument {
    /// RFC 3339 date-time, with or without a fraction of a second, as `format: date-time` says.
    static func isDateTime(_ text: String) -> Bool {
        let plain = ISO8601DateFormatter()
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        // Foundation reads at most milliseconds; the service writes microseconds.
        let trimmed = text.replacingOccurrences(of: #"(\.\d{3})\d+Z$"#, with: "$1Z", options: .regularExpression)
        return plain.date(from: text) != nil || fractional.date(from: trimmed) != nil
    }
}
