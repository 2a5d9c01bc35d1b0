import CorralCore
import CorralSandbox
import Foundation

/// corral.toml: where the engine is, how the service runs, and the templates with their pools.
public struct CorralConfiguration: Sendable {
    public struct Engine: Sendable, Hashable {
        /// `unix:///path` or `tcp://host:port`; nil: `--engine`, `CORRAL_ENGINE`, or the
        /// local docker socket.
        public var endpoint: String?
        public var tlsCA: String?
        public var tlsCert: String?
        public var tlsKey: String?

        public init() {}
    }

    /// `[service]`: timers of the long-running service.
    public struct Service: Sendable, Hashable {
        /// Time between a pool's passes (a claim starts one at once).
        public var checkInterval: Duration = .seconds(5)
        /// Time between the reaper's sweeps.
        public var reapInterval: Duration = .seconds(30)
        /// See `Provisioner.Configuration.claimGrace`.
        public var claimGrace: Duration = .seconds(60)
        /// First and longest wait after failed pool passes.
        public var backoff = Backoff()

        public init() {}
    }

    public var engine = Engine()
    public var service = Service()
    public var templates: [SandboxTemplate] = []
    /// Where it was read from, for messages.
    public var source: String?

    public init() {}

    public func template(named name: TemplateName) -> SandboxTemplate? {
        templates.first { $0.name == name }
    }
}
