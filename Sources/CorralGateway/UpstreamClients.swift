import CorralCore
import CorralPolicy
import CurlHTTP
import Logging
import Synchronization

/// One libcurl client per upstream git host, kept for connection reuse.
final class UpstreamClients: Sendable {
    private let configuration: Gateway.Configuration
    private let logger: Logger
    private let clients = Mutex<[String: CurlHTTPClient]>([:])

    init(configuration: Gateway.Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// The client for `repository`'s host: HTTPS, or plain HTTP to a loopback host.
    func client(for repository: GitRepository) throws -> CurlHTTPClient {
        let base = "\(repository.isLoopbackHost ? "http" : "https")://\(repository.host)"
        return try clients.withLock { clients in
            if let existing = clients[base] { return existing }
            let endpoint = try HTTPEndpoint(
                parsing: base, tls: repository.isLoopbackHost ? nil : configuration.upstreamTLS)
            var clientConfiguration = CurlHTTPClient.Configuration()
            clientConfiguration.connectTimeout = configuration.upstreamConnectTimeout
            clientConfiguration.maxConnections = 32
            let client = try CurlHTTPClient(endpoint: endpoint, configuration: clientConfiguration, logger: logger)
            clients[base] = client
            return client
        }
    }

    func shutdown() {
        let all = clients.withLock { clients -> [CurlHTTPClient] in
            defer { clients.removeAll() }
            return Array(clients.values)
        }
        for client in all { client.shutdown() }
    }
}
