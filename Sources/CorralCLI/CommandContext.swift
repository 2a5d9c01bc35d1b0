import CorralCore
import CorralSandbox
import CurlHTTP
import DockerEngine
import Foundation
import Logging

/// What a command needs to reach the engine and the state directory, built from the
/// global options once per command.
struct CommandContext {
    let global: GlobalOptions
    let logger: Logger

    init(_ global: GlobalOptions) {
        self.global = global
        self.logger = Logger(label: "corral")
    }

    var tls: TLSConfiguration? {
        guard global.tlsCA != nil || global.tlsCert != nil || global.tlsKey != nil else { return nil }
        return TLSConfiguration(caFile: global.tlsCA, certificateFile: global.tlsCert, keyFile: global.tlsKey)
    }

    func engine() throws -> DockerEngineClient {
        try DockerEngineClient(parsing: global.engineEndpoint, tls: tls, logger: logger)
    }

    /// The state directory, created on first use with mode 0700 (and tightened to it): it
    /// holds sessions, records and every sandbox's sockets, for root's eyes only.
    func stateDirectory() throws -> URL {
        let directory = global.stateDirectory
        do {
            try PrivateDirectory.make(directory)
        } catch let error as CorralError {
            throw CorralError(
                error.code, "cannot prepare the state directory: \(error.message)",
                hint: "pass --state-dir or set CORRAL_STATE_DIR to a directory you can write")
        }
        return directory
    }

    func provisioner(engine: DockerEngineClient? = nil, templates: [SandboxTemplate] = []) throws -> Provisioner {
        Provisioner(
            engine: try engine ?? self.engine(),
            configuration: .init(environment: try sandboxEnvironment(), templates: templates),
            logger: logger)
    }

    func sandboxEnvironment() throws -> SandboxEnvironment {
        SandboxEnvironment(
            initBinary: try SandboxEnvironment.locateInit(),
            sandboxesDirectory: try stateDirectory().appendingPathComponent("sandboxes", isDirectory: true))
    }
}

/// Parses a sandbox id from the command line, with an error that says what ids look like.
func parseSandboxID(_ text: String) throws -> SandboxID {
    try SandboxID(validating: text)
}

/// `KEY=value` pairs from repeated options.
func parsePairs(_ pairs: [String], what: String) throws -> [String: String] {
    var result: [String: String] = [:]
    for pair in pairs {
        guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
            throw CorralError.invalidArgument("invalid \(what) '\(pair)'", hint: "use KEY=VALUE")
        }
        result[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
    }
    return result
}
