import ArgumentParser
import CorralCore
import CorralSandbox
import Foundation

struct ToolCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tool",
        abstract: "Run a tool in a sandbox, as an agent would: execute(name, input).",
        discussion: """
            Prints the tool's output and exits 1 when the output is an error. Tools: bash \
            ({"command": "..."}), str_replace_based_edit_tool ({"command": "view", "path": "/workspace"}).
            """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The sandbox id.")
    var id: String

    @Argument(help: "The tool's name.")
    var name: String

    @Argument(help: "The tool's input, a JSON object.")
    var input: String

    @Flag(help: "Print the whole result as JSON (text, isError, status, truncated).")
    var json = false

    func run() async throws {
        let sandboxID = try parseSandboxID(id)
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: Data(input.utf8))
        } catch {
            throw CorralError.invalidArgument(
                "the tool input is not valid JSON", hint: #"quote it for the shell, such as '{"command": "ls"}'"#)
        }
        let backend = try await CommandContext(global).backend()
        defer { backend.shutdown() }
        let output = try await backend.execute(sandboxID, tool: name, input: value)
        if json {
            try CLIOutput.printJSON(output)
        } else {
            FileHandle.standardOutput.write(Data(output.text.utf8))
            if !output.text.isEmpty && !output.text.hasSuffix("\n") { print("") }
        }
        if output.isError { throw ExitCode(1) }
    }
}
