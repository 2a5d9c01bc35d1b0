import CorralCore
import CorralSandbox
import CorralService
import CurlHTTP
import DockerEngine
import Foundation

extension CommandContext {
    /// corral.toml as `--config`, `CORRAL_CONFIG` or `$STATE/corral.toml` gives it; nil when
    /// none is named and the default is absent.
    func configuration(explicit: String?) throws -> CorralConfiguration? {
        try ConfigurationDiscovery.load(
            explicit: explicit, environment: global.environment, stateDirectory: try stateDirectory())
    }

    /// The engine: `--engine`, else `CORRAL_ENGINE`, else the configuration's `[engine]`, else
    /// the local docker socket.
    func engine(configuration: CorralConfiguration?) throws -> DockerEngineClient {
        guard global.engine == nil, global.environment["CORRAL_ENGINE"] == nil, let settings = configuration?.engine,
            let endpoint = settings.endpoint
        else { return try engine() }
        let tls =
            self.tls
            ?? ((settings.tlsCA ?? settings.tlsCert ?? settings.tlsKey) == nil
                ? nil
                : TLSConfiguration(caFile: settings.tlsCA, certificateFile: settings.tlsCert, keyFile: settings.tlsKey))
        return try DockerEngineClient(parsing: endpoint, tls: tls, logger: logger)
    }

    /// A provisioner that knows the configuration's templates.
    func provisioner(configuration: CorralConfiguration?) throws -> Provisioner {
        try provisioner(engine: try engine(configuration: configuration), templates: configuration?.templates ?? [])
    }
}
