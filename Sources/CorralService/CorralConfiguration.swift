import CorralCore
import CorralGateway
import CorralSandbox
import CorralSessionPostgres
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

    /// `[server]`: where the HTTP API listens, and how long it waits for clients.
    public struct Server: Sendable, Hashable {
        /// `host:port` for tenants with bearer tokens; nil (or `listen = ""`) for none.
        public var listen: String? = "127.0.0.1:8420"
        /// The unix socket the local command line uses; nil: `$STATE/corral.sock`.
        public var socket: String?
        /// A request head must arrive whole within this time (at most 30s).
        public var headerTimeout: Duration = .seconds(30)
        /// A keep-alive connection with no request under way is closed after this time; a
        /// response still being sent (an event stream, a long exec) is not idle.
        public var idleTimeout: Duration = .seconds(60)
        /// How long a stop (SIGTERM) waits for requests under way before it cancels them.
        public var shutdownTimeout: Duration = .seconds(30)

        public static let maximumHeaderTimeout: Duration = .seconds(30)

        public init() {}
    }

    /// `[workers]`: where workers dial in, and how the control plane follows them
    /// (docs/workers.md).
    public struct Workers: Sendable, Hashable {
        /// `host:port` of the worker port; nil (the default): no workers but the service's own
        /// engine host.
        public var listen: String?
        /// The URL workers dial for this replica (`https://host:port`), when replicas share a
        /// PostgreSQL store; nil: the worker port's own address, unless it listens on every
        /// interface (then workers reach this replica only through their `--server`).
        public var advertise: String?
        /// PEM files for the worker port's TLS; required unless it listens on loopback.
        public var tlsCert: String?
        public var tlsKey: String?
        /// PEM CA that signs workers' client certificates; nil: workers prove themselves with
        /// their token only.
        public var clientCA: String?
        public var heartbeat: Duration = .seconds(5)
        public var grace: Duration = .seconds(30)
        /// Workers sampled per placement (the best of them by free room is taken).
        public var sample = 3
        /// The group of the service's own engine host; "" for none (a control plane that runs no
        /// sandboxes itself).
        public var localGroup = "default"
        /// `[[workers.pools]]`: idle members a group keeps of a template, split among its
        /// connected workers that offer it.
        public var pools: [GroupPoolTarget] = []

        public init() {}
    }

    /// One `[[workers.pools]]` entry.
    public struct GroupPoolTarget: Sendable, Hashable {
        public var group: String
        public var template: String
        public var minIdle: Int

        public init(group: String, template: String, minIdle: Int) {
            self.group = group
            self.template = template
            self.minIdle = minIdle
        }
    }

    /// `[limits]`: what one tenant may hold, and how large requests may be.
    public struct Limits: Sendable, Hashable {
        public var sandboxesPerTenant = 20
        public var sessionsPerTenant = 1000
        public var maxArchiveBytes: ByteSize = .gibibytes(1)

        public init() {}
    }

    /// `[gateway]`: what the operator opens beyond the gateway's defaults.
    public struct GatewaySettings: Sendable, Hashable {
        /// `private_hosts = ["host:port", …]`: the only internal (loopback, private,
        /// link-local) hosts a network tenant's sandbox may reach; see `DialPolicy`.
        public var dialPolicy = DialPolicy()
        /// `[gateway.push_branches]`: tenant name → branches (`main`, `release/*`) its
        /// sandboxes may push besides their own `corral/<id>`.
        public var pushBranches = PushBranchRules()

        public init() {}
    }

    /// `[store]`: where sessions live. The URL holds a password: print `redactedURL`, never
    /// `url`.
    public struct Store: Sendable, Hashable {
        /// `postgres://…` for PostgreSQL; nil for the files under the state directory.
        public var url: String?
        /// How long a harness run's lease lasts unrenewed, with PostgreSQL (`run_lease`): a
        /// replica that dies has its runs taken over by another after this.
        public var runLease: Duration = .seconds(30)

        public init() {}

        public var redactedURL: String? { url.map(PostgresStoreURL.redact) }
    }

    public var engine = Engine()
    public var store = Store()
    public var gateway = GatewaySettings()
    public var service = Service()
    public var server = Server()
    public var limits = Limits()
    public var workers = Workers()
    public var templates: [SandboxTemplate] = []
    /// Where it was read from, for messages.
    public var source: String?

    public init() {}

    public func template(named name: TemplateName) -> SandboxTemplate? {
        templates.first { $0.name == name }
    }

    /// What `corral serve` runs with when no file is given: the base image as template `base`
    /// with a small warm pool, the local engine, the API on 127.0.0.1:8420.
    public static var embeddedDefaults: CorralConfiguration {
        var configuration = CorralConfiguration()
        var template = SandboxTemplate(name: TemplateName(unchecked: "base"))
        template.pool.minIdle = 2
        template.pool.maxTotal = 20
        template.pool.maxAge = .seconds(3600)
        template.idleTTL = .seconds(1800)
        configuration.templates = [template]
        configuration.source = "embedded defaults"
        return configuration
    }
}
