import CorralAPI
import CorralCore
import CurlHTTP
import Foundation

extension CommandContext {
    /// Where sandbox commands go: the service named by `--server` / `CORRAL_SERVER` (with
    /// `CORRAL_TOKEN`), else the service answering on `$STATE/corral.sock`, else this process,
    /// straight on the engine (claiming from warm pools is safe there too).
    func backend(config: String? = nil) async throws -> any SandboxBackend {
        if let server = global.server ?? global.environment["CORRAL_SERVER"], !server.isEmpty {
            let client = try CorralClient(endpoint: try HTTPEndpoint(parsing: server), token: global.environment["CORRAL_TOKEN"])
            return RemoteBackend(client: client)
        }
        let socket = try stateDirectory().appendingPathComponent("corral.sock").path
        if FileManager.default.fileExists(atPath: socket) {
            let client = try CorralClient(endpoint: .unixSocket(path: socket))
            if await client.isServing() { return RemoteBackend(client: client) }
            client.shutdown()
        }
        let configuration = try self.configuration(explicit: config)
        return EmbeddedBackend(provisioner: try provisioner(configuration: configuration))
    }
}
