import CorralAPI
import CorralCore
import CurlHTTP
import Foundation

extension CommandContext {
    /// The service commands go through: the one named by `--server` / `CORRAL_SERVER` (with
    /// `CORRAL_TOKEN`), else the one answering on `$STATE/corral.sock`; nil when neither, and
    /// the command runs in this process.
    func serviceClient() async throws -> CorralClient? {
        if let server = global.server ?? global.environment["CORRAL_SERVER"], !server.isEmpty {
            let token = global.environment["CORRAL_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            return try CorralClient(endpoint: try HTTPEndpoint(parsing: server), token: token)
        }
        // A connect tells whether a service answers, without an HTTP round trip before every
        // command.
        let socket = try stateDirectory().appendingPathComponent("corral.sock").path
        guard UnixSocketPath.accepts(socket) else { return nil }
        return try CorralClient(endpoint: .unixSocket(path: socket))
    }

    /// Where sandbox commands go: a service (see `serviceClient`); else the host agent, started
    /// now (see `HostAgent`); else, with CORRAL_AGENT=0 or a `--config` of the command's own
    /// (an agent serves the state directory's), this process, straight on the engine
    /// (claiming from warm pools is safe there too).
    func backend(config: String? = nil) async throws -> any SandboxBackend {
        if let client = try await serviceClient() { return RemoteBackend(client: client) }
        if config == nil, HostAgent.enabled(environment: global.environment) {
            let state = try stateDirectory()
            let socket = state.appendingPathComponent("corral.sock").path
            try await HostAgent.start(state: state, socket: socket, global: global)
            return RemoteBackend(client: try CorralClient(endpoint: .unixSocket(path: socket)))
        }
        let configuration = try self.configuration(explicit: config)
        return EmbeddedBackend(provisioner: try provisioner(configuration: configuration))
    }

    /// Where session commands go: a service (see `serviceClient`), else the session files
    /// under the state directory.
    func sessionBackend() async throws -> any SessionBackend {
        if let client = try await serviceClient() { return RemoteSessionBackend(client: client) }
        return EmbeddedSessionBackend(store: try await global.sessionStore())
    }
}
