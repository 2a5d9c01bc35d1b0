import CorralCore
import DockerEngine

/// Views and edits text files, compatible with Anthropic's `str_replace_based_edit_tool`:
/// `view` (a file with line numbers, optionally a `view_range`, or a directory two levels
/// deep), `create`, `str_replace` (the old text must occur exactly once) and `insert` (after
/// `insert_line`; 0 inserts at the top).
public struct TextEditorTool: SandboxTool {
    public let name = "str_replace_based_edit_tool"
    public let description =
        "View, create and edit text files in the sandbox: view, create, str_replace (old_str must match exactly once) and insert."
    public let configuration: ToolConfiguration

    public init(configuration: ToolConfiguration = ToolConfiguration()) {
        self.configuration = configuration
    }

    public var inputSchema: JSONValue {
        [
            "type": "object",
            "properties": [
                "command": ["type": "string", "enum": ["view", "create", "str_replace", "insert"]],
                "path": ["type": "string", "description": "Absolute path of the file or directory."],
                "view_range": [
                    "type": "array", "items": ["type": "integer"],
                    "description": "For view: [first, last] line, 1-based; last -1 means to the end.",
                ],
                "file_text": ["type": "string", "description": "For create: the whole file."],
                "old_str": ["type": "string", "description": "For str_replace: text that occurs exactly once."],
                "new_str": ["type": "string", "description": "For str_replace and insert: the new text."],
                "insert_line": [
                    "type": "integer", "description": "For insert: the line after which to insert (0 = top).",
                ],
                "insert_text": ["type": "string", "description": "For insert: the text (new_str is accepted too)."],
            ],
            "required": ["command", "path"],
        ]
    }

    public func isIdempotent(_ input: JSONValue) -> Bool {
        input["command"]?.stringValue == "view"
    }

    public func run(_ input: JSONValue, in sandbox: Sandbox) async throws -> ToolOutput {
        do {
            let fields = try ToolInput(tool: name, input)
            let command = try fields.string("command")
            let path = try fields.string("path")
            guard path.hasPrefix("/") else {
                return .error("\(path) is not an absolute path; give the full path, such as /workspace/\(path)")
            }
            switch command {
            case "view": return try await view(path, range: fields.object["view_range"], in: sandbox)
            case "create": return try await create(path, text: fields.string("file_text"), in: sandbox)
            case "str_replace":
                return try await replace(
                    path, old: fields.string("old_str"), new: fields.optionalString("new_str") ?? "", in: sandbox)
            case "insert":
                guard let line = try fields.optionalInt("insert_line") else {
                    return .error("insert: 'insert_line' is required")
                }
                guard let text = try fields.optionalString("insert_text") ?? fields.optionalString("new_str") else {
                    return .error("insert: 'insert_text' (or 'new_str') is required")
                }
                return try await insert(path, after: line, text: text, in: sandbox)
            case "undo_edit":
                return .error("undo_edit is not supported: edit the file again to change it back")
            default:
                return .error("unknown command '\(command)'; use view, create, str_replace or insert")
            }
        } catch let error as ToolInputError {
            return .error(error.message)
        } catch let error as CorralError where error.code != .cancelled {
            return .error(error.description)
        }
    }

    // MARK: Commands

    private func view(_ path: String, range: JSONValue?, in sandbox: Sandbox) async throws -> ToolOutput {
        guard let stat = try await sandbox.stat(path) else {
            return .error("\(path) does not exist")
        }
        if stat.isDirectory {
            guard range == nil || range == .null else { return .error("view_range applies to files, not directories") }
            let result = try await sandbox.run(
                SandboxCommand(["find", path, "-maxdepth", "2", "-not", "-path", "*/.*"], timeout: .seconds(30)),
                limit: configuration.outputLimit)
            guard result.status.exitCode == 0 else {
                return .error("could not list \(path): \(result.stderr)")
            }
            let lines = result.stdout.split(separator: "\n").sorted()
            return .success(
                "Files and directories up to 2 levels deep in \(path), hidden items excluded:\n"
                    + lines.joined(separator: "\n"))
        }
        let text = try await readText(path, in: sandbox)
        var lines = Self.lines(text)
        var first = 1
        if let range, range != .null {
            guard let bounds = range.arrayValue?.compactMap({ $0.intValue.map(Int.init) }), bounds.count == 2 else {
                return .error("view_range must be two integers, [first, last]")
            }
            let last = bounds[1] == -1 ? lines.count : bounds[1]
            guard bounds[0] >= 1, bounds[0] <= max(lines.count, 1), last >= bounds[0], last <= lines.count else {
                return .error(
                    "view_range \(bounds) is outside the file's \(lines.count) lines; use 1-based lines, last -1 for the end"
                )
            }
            first = bounds[0]
            lines = Array(lines[(first - 1)..<last])
        }
        var output = OutputCapture(limit: configuration.outputLimit)
        output.append(Array(Self.numbered(lines, from: first).utf8))
        return ToolOutput(text: output.text(streamName: "the file"), isError: false, truncated: output.truncated)
    }

    private func create(_ path: String, text: String, in sandbox: Sandbox) async throws -> ToolOutput {
        if let existing = try await sandbox.stat(path) {
            return .error(
                existing.isDirectory
                    ? "\(path) is a directory"
                    : "\(path) already exists; use str_replace or insert to change it")
        }
        try await write(text, to: path, in: sandbox)
        return .success("Created \(path) (\(Self.lines(text).count) lines)")
    }

    private func replace(_ path: String, old: String, new: String, in sandbox: Sandbox) async throws -> ToolOutput {
        guard !old.isEmpty else { return .error("str_replace: 'old_str' is empty; give the exact text to replace") }
        let text = try await readText(path, in: sandbox)
        let matches = Self.occurrences(of: old, in: text)
        guard let match = matches.first else {
            return .error("No replacement was made: old_str did not appear verbatim in \(path)")
        }
        guard matches.count == 1 else {
            let lineNumbers = matches.map { Self.lineNumber(of: $0, in: text) }
            return .error(
                "No replacement was made: old_str occurs \(matches.count) times in \(path), at lines \(lineNumbers.map(String.init).joined(separator: ", ")); include more context so that it is unique"
            )
        }
        let updated = text.replacingCharacters(in: match, with: new)
        try await write(updated, to: path, in: sandbox)
        let firstLine = Self.lineNumber(of: match, in: text)
        let lastLine = firstLine + max(Self.lines(new).count - 1, 0)
        return .success("Edited \(path).\n" + Self.snippet(of: updated, around: firstLine...lastLine))
    }

    private func insert(_ path: String, after line: Int, text: String, in sandbox: Sandbox) async throws -> ToolOutput {
        let content = try await readText(path, in: sandbox)
        var lines = Self.lines(content)
        guard line >= 0, line <= lines.count else {
            return .error("insert_line \(line) is outside the file's \(lines.count) lines (0 inserts at the top)")
        }
        let added = Self.lines(text)
        lines.insert(contentsOf: added, at: line)
        let updated = lines.joined(separator: "\n") + (content.hasSuffix("\n") || content.isEmpty ? "\n" : "")
        try await write(updated, to: path, in: sandbox)
        return .success(
            "Inserted \(added.count) line(s) into \(path) after line \(line).\n"
                + Self.snippet(of: updated, around: (line + 1)...(line + max(added.count, 1))))
    }

    // MARK: Helpers

    private func readText(_ path: String, in sandbox: Sandbox) async throws -> String {
        let bytes = try await sandbox.readFile(path, limit: configuration.maxFileSize)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw CorralError.invalidArgument("\(path) is not UTF-8 text; the editor only handles text files")
        }
        return text
    }

    private func write(_ text: String, to path: String, in sandbox: Sandbox) async throws {
        let bytes = Array(text.utf8)
        guard bytes.count <= configuration.maxFileSize else {
            throw CorralError(
                .resourceExhausted,
                "the new text is larger than the editor's limit of \(ByteSize(bytes: Int64(configuration.maxFileSize)))"
            )
        }
        // Keep the file's mode when it has one.
        var mode: UInt32 = 0o644
        if let stat = try await sandbox.stat(path), !stat.isDirectory { mode = stat.mode & 0o7777 }
        try await sandbox.writeFile(path, contents: bytes, mode: mode)
    }

    /// Lines without their terminators; a final newline does not make an extra empty line.
    static func lines(_ text: String) -> [String] {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if text.hasSuffix("\n") { lines.removeLast() }
        return lines
    }

    static func numbered(_ lines: [String], from first: Int) -> String {
        lines.enumerated().map { index, line in
            let number = String(first + index)
            return String(repeating: " ", count: max(0, 6 - number.count)) + number + "\t" + line
        }.joined(separator: "\n")
    }

    static func occurrences(of needle: String, in text: String) -> [Range<String.Index>] {
        var found: [Range<String.Index>] = []
        var searchStart = text.startIndex
        while searchStart < text.endIndex, let range = text.range(of: needle, range: searchStart..<text.endIndex) {
            found.append(range)
            searchStart = range.upperBound
        }
        return found
    }

    static func lineNumber(of range: Range<String.Index>, in text: String) -> Int {
        text[text.startIndex..<range.lowerBound].reduce(1) { $1 == "\n" ? $0 + 1 : $0 }
    }

    /// The edited lines with up to 4 lines of context, numbered.
    static func snippet(of text: String, around lines: ClosedRange<Int>) -> String {
        let all = Self.lines(text)
        guard !all.isEmpty else { return "(the file is now empty)" }
        let first = max(1, lines.lowerBound - 4)
        let last = min(all.count, lines.upperBound + 4)
        guard first <= last else { return "" }
        return numbered(Array(all[(first - 1)..<last]), from: first)
    }
}
