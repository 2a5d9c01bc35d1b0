import ArgumentParser
import CorralCore
import Foundation

/// `corral version [--json]`: the same version `corral --version` prints, and with --json
/// what a script checks before it relies on a feature.
struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "version", abstract: "Print corral's version (--json: also the API version).")

    @Flag(help: "Print a JSON object: version, api.")
    var json = false

    func run() throws {
        if json {
            print(#"{"api":"\#(CorralVersion.api)","version":"\#(CorralVersion.current)"}"#)
        } else {
            print("corral \(CorralVersion.current)")
        }
    }
}
