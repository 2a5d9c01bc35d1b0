import ArgumentParser
import CorralCore
import Foundation
import Logging

/// The `corral` command line. Each subcommand lives in its own file, grouped by noun.
public struct CorralCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "corral",
        abstract: "Disposable, hardened sandboxes and durable sessions for AI agents.",
        version: "corral \(CorralVersion.current)",
        subcommands: [
            DoctorCommand.self,
            SandboxCommandGroup.self,
            ExecCommand.self,
            ToolCommand.self,
            CopyCommand.self,
            AttachCommand.self,
            PsCommand.self,
            KillCommand.self,
            PortForwardCommand.self,
            RunCommand.self,
            PoolCommandGroup.self,
            ServeCommand.self,
            WorkerCommand.self,
            SessionCommand.self,
            StoreCommand.self,
            TenantCommandGroup.self,
            VaultCommand.self,
            AgentCommand.self,
            VersionCommand.self,
        ]
    )

    public init() {}

    /// Runs the command line. Errors print as one line on stderr (`corral: what went wrong`),
    /// then a `hint:` line when there is something to do about it, and exit non-zero.
    /// Answers `--version` (and `version`) before the command tree is built and logging set
    /// up: a script's version check should cost only the process's start. Returns otherwise.
    public static func answerAtOnce(_ arguments: [String]) {
        guard arguments == ["--version"] || arguments == ["version"] else { return }
        print("corral \(CorralVersion.current)")
        Foundation.exit(0)
    }

    /// Parses and runs a command: the plain forms of `corral exec` and `corral sandbox create`
    /// by the quick path (`QuickPath`), everything else by ArgumentParser.
    public static func runAndExit(arguments: [String]? = nil) async -> Never {
        let arguments = arguments ?? Array(CommandLine.arguments.dropFirst())
        bootstrapLogging()
        do {
            if let exec = QuickPath.exec(arguments) {
                try await exec.run()
                Foundation.exit(0)
            }
            if let create = QuickPath.sandboxCreate(arguments) {
                try await create.run()
                Foundation.exit(0)
            }
            var command = try parseAsRoot(hoistingGlobalOptions(arguments))
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            Foundation.exit(0)
        } catch let error as CorralError {
            CLIOutput.printError(error)
            Foundation.exit(error.exitStatus)
        } catch let error as any CorralErrorConvertible {
            let converted = error.corralError
            CLIOutput.printError(converted)
            Foundation.exit(converted.exitStatus)
        } catch let exit as ExitCode {
            Foundation.exit(exit.rawValue)
        } catch {
            // Usage errors in corral's own format: one line, then where to look. Help and
            // clean exits keep ArgumentParser's handling.
            let code = exitCode(for: error)
            let message = self.message(for: error)
            guard code != .success, !message.isEmpty else { exit(withError: error) }
            let firstLine = message.split(separator: "\n").first.map(String.init) ?? message
            let trimmed = firstLine.hasPrefix("Error: ") ? String(firstLine.dropFirst("Error: ".count)) : firstLine
            CLIOutput.printError(
                CorralError(.invalidArgument, trimmed, hint: "see corral --help, or corral COMMAND --help"))
            Foundation.exit(code.rawValue)
        }
    }
}

extension CorralCommand {
    /// Options every command takes, with whether they take a value.
    static let globalOptions: [String: Bool] = [
        "--engine": true, "--tls-ca": true, "--tls-cert": true, "--tls-key": true, "--state-dir": true,
        "--server": true,
    ]

    /// Lets global options come before the subcommand, as with docker (`corral --engine URL
    /// sandbox ls`): they move to just after the subcommand's words, where every command
    /// accepts them.
    static func hoistingGlobalOptions(_ arguments: [String]) -> [String] {
        var hoisted: [String] = []
        var rest = arguments[...]
        while let first = rest.first, first.hasPrefix("--") {
            let name = String(first.split(separator: "=", maxSplits: 1)[0])
            guard let takesValue = globalOptions[name] else { break }
            hoisted.append(first)
            rest = rest.dropFirst()
            if takesValue, !first.contains("="), let value = rest.first {
                hoisted.append(value)
                rest = rest.dropFirst()
            }
        }
        guard !hoisted.isEmpty else { return arguments }
        var words: [String] = []
        while let first = rest.first, !first.hasPrefix("-") {
            words.append(first)
            rest = rest.dropFirst()
        }
        return words + hoisted + rest
    }

    /// Warnings and errors only, unless CORRAL_LOG asks for more (trace, debug, info, ...).
    static func bootstrapLogging() {
        let level = GlobalOptions.processEnvironment["CORRAL_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

extension CorralError {
    /// Exit statuses follow sysexits loosely: 2 for usage, 69 unavailable, 1 for the rest.
    var exitStatus: Int32 {
        switch code {
        case .invalidArgument: 2
        case .unavailable: 69
        default: 1
        }
    }
}

enum CLIOutput {
    /// A one-line note on stderr.
    static func note(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    static func printError(_ error: CorralError) {
        var text = "corral: \(error.description)\n"
        if let hint = error.hint { text += "hint: \(hint)\n" }
        FileHandle.standardError.write(Data(text.utf8))
    }

    /// Prints rows as columns separated by two spaces; the first row is the header.
    static func printTable(_ rows: [[String]]) {
        guard let columns = rows.map(\.count).max() else { return }
        let widths = (0..<columns).map { column in rows.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0 }
        for row in rows {
            let cells = row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count)
            }
            print(cells.joined(separator: "  "))
        }
    }

    /// A short human span: 45s, 12m, 3h, 2d.
    static func age(_ seconds: Double) -> String {
        let value = Int(seconds.rounded())
        if value < 0 { return "now" }
        if value < 120 { return "\(value)s" }
        if value < 7200 { return "\(value / 60)m" }
        if value < 172_800 { return "\(value / 3600)h" }
        return "\(value / 86400)d"
    }

    /// Prints an Encodable as pretty, key-sorted JSON on stdout.
    static func printJSON<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        let data = try encoder.encode(value)
        FileHandle.standardOutput.write(data)
        FileHandle.standardOutput.write(Data("\n".utf8))
    }
}
