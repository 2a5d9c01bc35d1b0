import CorralCore
import DockerEngine

/// Runs a shell command: `{"command": "...", "timeout": 60, "workdir": "/workspace", "env": {...}}`.
///
/// Each call is a fresh `bash -c` in the workspace; nothing carries over between calls but
/// the files. Each output stream is capped (head and tail kept); a command past its timeout
/// has its whole process group killed, and the output says so.
public struct BashTool: SandboxTool {
    public let name = "bash"
    public let description =
        "Run a bash command in the sandbox and get its stdout, stderr and exit status. Each call starts a fresh shell in /workspace."
    public let configuration: ToolConfiguration

    public init(configuration: ToolConfiguration = ToolConfiguration()) {
        self.configuration = configuration
    }

    public var inputSchema: JSONValue {
        [
            "type": "object",
            "properties": [
                "command": ["type": "string", "description": "The command, run with bash -c."],
                "timeout": ["type": "number", "description": "Seconds before the command is killed (default 120)."],
                "workdir": ["type": "string", "description": "Directory to run in (default /workspace)."],
                "env": [
                    "type": "object", "additionalProperties": ["type": "string"],
                    "description": "Extra environment variables.",
                ],
                "restart": [
                    "type": "boolean",
                    "description": "Accepted for compatibility; every call already starts a fresh shell.",
                ],
            ],
            "required": ["command"],
        ]
    }

    public func isIdempotent(_ input: JSONValue) -> Bool { false }

    public func run(_ input: JSONValue, in sandbox: Sandbox) async throws -> ToolOutput {
        let command: SandboxCommand
        do {
            let fields = try ToolInput(tool: name, input)
            if try fields.optionalBool("restart") == true, fields.object["command"] == nil {
                return .success("bash: every call starts a fresh shell; nothing to restart")
            }
            command = try parse(fields)
        } catch let error as ToolInputError {
            return .error(error.message)
        }
        var stdout = OutputCapture(limit: configuration.outputLimit)
        var stderr = OutputCapture(limit: configuration.outputLimit)
        let status: CommandStatus
        do {
            status = try await sandbox.run(command) { stream, bytes in
                if stream == .stderr { stderr.append(bytes) } else { stdout.append(bytes) }
            }
        } catch let error as CorralError where error.code != .cancelled {
            // A cancelled call (the harness stopped) is not an outcome: it propagates, and the
            // intent stays open for a wake to record as unknown.
            return .error(error.description)
        }
        return Self.format(status: status, command: command, stdout: stdout, stderr: stderr)
    }

    func parse(_ fields: ToolInput) throws -> SandboxCommand {
        let text = try fields.string("command")
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw ToolInputError("bash: 'command' is empty")
        }
        var timeout = configuration.defaultTimeout
        if let seconds = try fields.optionalNumber("timeout") {
            guard seconds > 0, seconds.isFinite else {
                throw ToolInputError("bash: 'timeout' must be a positive number of seconds")
            }
            guard seconds <= configuration.maxTimeout.milliseconds / 1000 else {
                throw ToolInputError("bash: 'timeout' may be at most \(configuration.maxTimeout.compactDescription)")
            }
            timeout = .milliseconds(Int64(seconds * 1000))
        }
        let workdir = try fields.optionalString("workdir") ?? fields.optionalString("cwd")
        if let workdir, !workdir.hasPrefix("/") {
            throw ToolInputError("bash: 'workdir' must be an absolute path, got '\(workdir)'")
        }
        var environment: [String: String] = [:]
        if let value = fields.object["env"], value != .null {
            guard let object = value.objectValue else {
                throw ToolInputError("bash: 'env' must be an object of strings")
            }
            for (key, entry) in object {
                guard let text = entry.stringValue else { throw ToolInputError("bash: env '\(key)' must be a string") }
                guard !key.isEmpty, !key.contains("=") else { throw ToolInputError("bash: invalid env name '\(key)'") }
                environment[key] = text
            }
        }
        return SandboxCommand(
            ["bash", "-c", text], environment: environment, workingDirectory: workdir, timeout: timeout)
    }

    static func format(status: CommandStatus, command: SandboxCommand, stdout: OutputCapture, stderr: OutputCapture)
        -> ToolOutput
    {
        var text = stdout.text(streamName: "stdout")
        let errors = stderr.text(streamName: "stderr")
        if !errors.isEmpty {
            if !text.isEmpty && !text.hasSuffix("\n") { text += "\n" }
            text += "[stderr]\n" + errors
        }
        var notes: [String] = []
        if status.timedOut {
            let limit = command.timeout?.compactDescription ?? "its limit"
            notes.append("[corral: timed out after \(limit); the command and its children were killed]")
        } else if status.oomKilled {
            notes.append("[corral: killed by the out-of-memory killer: the sandbox's memory limit was reached]")
        } else if status.exitCode != 0 {
            notes.append("[exit status \(status.exitCode)]")
        }
        if !notes.isEmpty {
            if !text.isEmpty && !text.hasSuffix("\n") { text += "\n" }
            text += notes.joined(separator: "\n")
        }
        return ToolOutput(
            text: text, isError: status.exitCode != 0 || status.timedOut, status: status,
            truncated: stdout.truncated || stderr.truncated)
    }
}
