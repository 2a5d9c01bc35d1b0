import CorralCore

/// What `execute(tool:input:)` returns: text for the model, and whether it is an error.
///
/// A failed command, a bad input, or a sandbox that died are all tool errors the model can
/// read and act on; none of them is thrown.
public struct ToolOutput: Sendable, Hashable, Codable {
    public var text: String
    public var isError: Bool
    /// How the command ended, for tools that run one.
    public var status: CommandStatus?
    /// True when output was cut to the cap.
    public var truncated: Bool

    public init(text: String, isError: Bool, status: CommandStatus? = nil, truncated: Bool = false) {
        self.text = text
        self.isError = isError
        self.status = status
        self.truncated = truncated
    }

    public static func error(_ text: String) -> ToolOutput {
        ToolOutput(text: text, isError: true)
    }

    public static func success(_ text: String) -> ToolOutput {
        ToolOutput(text: text, isError: false)
    }
}
