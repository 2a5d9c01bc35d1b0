import ArgumentParser
import CorralCore
import Foundation

/// The `corral` command line. Each subcommand lives in its own file, grouped by noun.
public struct CorralCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "corral",
        abstract: "Disposable, hardened sandboxes and durable sessions for AI agents.",
        subcommands: [
            SessionCommand.self,
            VaultCommand.self,
        ]
    )

    public init() {}

    /// Runs the command line. Errors print as one line on stderr (`corral: what went wrong`),
    /// then a `hint:` line when there is something to do about it, and exit non-zero.
    public static func runAndExit(arguments: [String]? = nil) async -> Never {
        do {
            var command = try parseAsRoot(arguments)
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
        } catch {
            exit(withError: error)
        }
    }
}

/// Errors from lower modules that know how to present themselves as a `CorralError`.
public protocol CorralErrorConvertible: Error {
    var corralError: CorralError { get }
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
    static func printError(_ error: CorralError) {
        var text = "corral: \(error.description)\n"
        if let hint = error.hint { text += "hint: \(hint)\n" }
        FileHandle.standardError.write(Data(text.utf8))
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
