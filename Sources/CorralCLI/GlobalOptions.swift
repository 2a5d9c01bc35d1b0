import ArgumentParser
import CorralCore
import Foundation

/// Options every command shares: where the engine is, where state lives.
public struct GlobalOptions: ParsableArguments, Sendable {
    @Option(
        name: .long,
        help: ArgumentHelp("Engine endpoint: unix:///path or tcp://host:port (env CORRAL_ENGINE).", valueName: "URL"))
    public var engine: String?

    @Option(
        name: .customLong("tls-ca"),
        help: ArgumentHelp("CA certificate that signs the engine's certificate.", valueName: "FILE"))
    public var tlsCA: String?

    @Option(
        name: .customLong("tls-cert"), help: ArgumentHelp("Client certificate for a TLS engine.", valueName: "FILE"))
    public var tlsCert: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("Client key for a TLS engine.", valueName: "FILE"))
    public var tlsKey: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "A corral service to use: http://host:port, with CORRAL_TOKEN (env CORRAL_SERVER).", valueName: "URL"))
    public var server: String?

    @Option(
        name: .customLong("state-dir"),
        help: ArgumentHelp("Where corral keeps its state (env CORRAL_STATE_DIR).", valueName: "DIR"))
    public var stateDir: String?

    public init() {}

    /// Every option set, as the quick path (`QuickPath`) builds them: an option of a parsable
    /// type left unset cannot be read.
    init(
        engine: String? = nil, tlsCA: String? = nil, tlsCert: String? = nil, tlsKey: String? = nil,
        server: String? = nil, stateDir: String? = nil
    ) {
        self.engine = engine
        self.tlsCA = tlsCA
        self.tlsCert = tlsCert
        self.tlsKey = tlsKey
        self.server = server
        self.stateDir = stateDir
    }

    /// The options' values, in order (two parses compare by them).
    var values: [String?] { [engine, tlsCA, tlsCert, tlsKey, server, stateDir] }

    /// The process's environment, read once: Foundation builds a new dictionary on each read,
    /// and a command reads it many times.
    public var environment: [String: String] { Self.processEnvironment }

    static let processEnvironment: [String: String] = {
        // Straight from `environ`: `ProcessInfo` sets up more than this needs, and every
        // command's first steps read the environment.
        var environment: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if let equals = text.utf8.firstIndex(of: UInt8(ascii: "=")) {
                let name = String(text[..<equals])
                if environment[name] == nil { environment[name] = String(text[text.index(after: equals)...]) }
            }
            entry += 1
        }
        return environment
    }()

    /// `--engine`, else `CORRAL_ENGINE`, else the local docker socket.
    public var engineEndpoint: String {
        engine ?? environment["CORRAL_ENGINE"] ?? "unix:///var/run/docker.sock"
    }

    /// `--state-dir`, else `CORRAL_STATE_DIR`, else `/var/lib/corral` for root and
    /// `$XDG_STATE_HOME/corral` (or `~/.local/state/corral`) for everyone else.
    public var stateDirectory: URL {
        if let path = stateDir ?? environment["CORRAL_STATE_DIR"], !path.isEmpty {
            return URL(fileURLWithPath: path, isDirectory: true)
        }
        if geteuid() == 0 { return URL(fileURLWithPath: "/var/lib/corral", isDirectory: true) }
        if let xdg = environment["XDG_STATE_HOME"], !xdg.isEmpty {
            return URL(fileURLWithPath: xdg, isDirectory: true).appendingPathComponent("corral", isDirectory: true)
        }
        return FileManager.default.homeDirectoryForCurrentUser
            .appendingPathComponent(".local/state/corral", isDirectory: true)
    }
}
