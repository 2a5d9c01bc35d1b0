import ArgumentParser
import CorralCore
import CorralSandbox
import Foundation

struct CopyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cp",
        abstract: "Copy files between the host and a sandbox.",
        discussion: """
            One side is ID:/absolute/path inside a sandbox, the other a host path. A host side \
            of - reads a tar from stdin (into a sandbox directory) or writes one to stdout. \
            Archives are checked: entries with '..', absolute names or links that leave the \
            copy are refused, and nothing is left behind.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Source: a host path, ID:/path, or - (a tar on stdin).")
    var source: String

    @Argument(help: "Destination: a host path, ID:/path, or - (a tar on stdout).")
    var destination: String

    func run() async throws {
        let from = try Location(source)
        let to = try Location(destination)
        let provisioner = try CommandContext(global).provisioner()
        switch (from, to) {
        case (.host(let path), .sandbox(let id, let inside)):
            let sandbox = provisioner.handle(id)
            if path == "-" {
                try await sandbox.copyIn(tar: StandardInputChunks.pull, to: inside)
            } else {
                try await sandbox.copyIn(from: URL(fileURLWithPath: path), to: inside)
            }
        case (.sandbox(let id, let inside), .host(let path)):
            let sandbox = provisioner.handle(id)
            if path == "-" {
                try await sandbox.copyOut(inside, tarTo: { FileHandle.standardOutput.write(Data($0)) })
            } else {
                try await sandbox.copyOut(inside, to: URL(fileURLWithPath: path))
            }
        case (.sandbox, .sandbox):
            throw CorralError.invalidArgument("both sides are sandboxes", hint: "copy out to the host, then in")
        case (.host, .host):
            throw CorralError.invalidArgument("neither side is a sandbox", hint: "write one side as ID:/path")
        }
    }

    enum Location {
        case host(String)
        case sandbox(SandboxID, String)

        init(_ text: String) throws {
            if let colon = text.firstIndex(of: ":"), text[text.index(after: colon)...].hasPrefix("/"),
                !text[..<colon].contains("/")
            {
                self = .sandbox(try parseSandboxID(String(text[..<colon])), String(text[text.index(after: colon)...]))
            } else if text.isEmpty {
                throw CorralError.invalidArgument("an empty path", hint: "give a host path or ID:/path")
            } else {
                self = .host(text)
            }
        }
    }
}

/// Standard input in chunks, for a tar read on another thread.
enum StandardInputChunks {
    static let pull: @Sendable () throws -> [UInt8]? = {
        let data = FileHandle.standardInput.readData(ofLength: 64 << 10)
        return data.isEmpty ? nil : [UInt8](data)
    }
}
