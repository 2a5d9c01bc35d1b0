import CorralCore

/// A tool the model can call, run against a sandbox.
public protocol SandboxTool: Sendable {
    var name: String { get }
    var description: String { get }
    /// JSON Schema of the input object.
    var inputSchema: JSONValue { get }
    /// True when running it twice has the same effect as once (a read). The harness re-runs
    /// such a call after a crash; any other call is reported as of unknown outcome.
    func isIdempotent(_ input: JSONValue) -> Bool
    func run(_ input: JSONValue, in sandbox: Sandbox) async throws -> ToolOutput
}

/// Tool settings shared by every sandbox of a provisioner.
public struct ToolConfiguration: Sendable, Hashable {
    /// Cap per output stream (stdout and stderr each).
    public var outputLimit: Int = 64 << 10
    /// Timeout for a bash command when the input gives none.
    public var defaultTimeout: Duration = .seconds(120)
    /// The longest timeout an input may ask for.
    public var maxTimeout: Duration = .seconds(3600)
    /// Largest file the editor reads or writes.
    public var maxFileSize: Int = 8 << 20

    public init() {}
}

/// Reads typed fields out of a tool's JSON input, with errors the model can act on.
struct ToolInput {
    let tool: String
    let object: [String: JSONValue]

    init(tool: String, _ input: JSONValue) throws {
        guard case .object(let object) = input else {
            throw ToolInputError("\(tool): the input must be a JSON object, got \(input.typeName)")
        }
        self.tool = tool
        self.object = object
    }

    func string(_ key: String) throws -> String {
        guard let value = object[key] else { throw ToolInputError("\(tool): '\(key)' is required") }
        guard let text = value.stringValue else {
            throw ToolInputError("\(tool): '\(key)' must be a string, got \(value.typeName)")
        }
        return text
    }

    func optionalString(_ key: String) throws -> String? {
        guard let value = object[key], value != .null else { return nil }
        guard let text = value.stringValue else {
            throw ToolInputError("\(tool): '\(key)' must be a string, got \(value.typeName)")
        }
        return text
    }

    func optionalInt(_ key: String) throws -> Int? {
        guard let value = object[key], value != .null else { return nil }
        guard let number = value.intValue else {
            throw ToolInputError("\(tool): '\(key)' must be an integer, got \(value.typeName)")
        }
        return Int(number)
    }

    func optionalNumber(_ key: String) throws -> Double? {
        guard let value = object[key], value != .null else { return nil }
        guard let number = value.doubleValue else {
            throw ToolInputError("\(tool): '\(key)' must be a number, got \(value.typeName)")
        }
        return number
    }

    func optionalBool(_ key: String) throws -> Bool? {
        guard let value = object[key], value != .null else { return nil }
        guard let flag = value.boolValue else {
            throw ToolInputError("\(tool): '\(key)' must be true or false, got \(value.typeName)")
        }
        return flag
    }
}

struct ToolInputError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}
