import CorralCore
import CorralGateway
import CorralSandbox
import Foundation
import TestSupport
import Testing

@testable import CorralService

@Suite("corral.toml")
struct ConfigurationTests {
    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    @Test("the shape the issue gives parses, with every field where it belongs")
    func issueShape() throws {
        let configuration = try CorralConfiguration.parse(
            """
            [engine]
            endpoint = "unix:///var/run/docker.sock"

            [[templates]]
            name = "base"
            image = "corral/base:bookworm"
            runtime = "runc"
            memory = "1g"
            cpus = 1
            setup = ["git config --global init.defaultBranch main"]

            [templates.pool]
            min_idle = 2
            max_total = 20
            max_age = "1h"
            """)
        #expect(configuration.engine.endpoint == "unix:///var/run/docker.sock")
        let base = try #require(configuration.template(named: TemplateName(unchecked: "base")))
        #expect(base.image == "corral/base:bookworm")
        #expect(base.runtime == .runc)
        #expect(base.resources.memory == .gibibytes(1))
        #expect(base.resources.cpus == 1)
        #expect(base.setup == ["git config --global init.defaultBranch main"])
        #expect(base.pool.minIdle == 2)
        #expect(base.pool.maxTotal == 20)
        #expect(base.pool.maxAge == .seconds(3600))
    }

    @Test("deploy/corral.example.toml parses")
    func example() throws {
        let configuration = try CorralConfiguration.load(
            file: Self.repository.appendingPathComponent("deploy/corral.example.toml"))
        #expect(configuration.templates.map(\.name.rawValue) == ["base", "gvisor"])
        #expect(configuration.templates[0].env == ["LANG": "C.UTF-8"])
        #expect(configuration.templates[0].idleTTL == .seconds(1800))
        #expect(configuration.templates[1].runtime == .runsc)
        #expect(configuration.templates[1].pool.minIdle == 0)
        #expect(configuration.service.backoff == Backoff(initial: .seconds(1), maximum: .seconds(60)))
    }

    @Test(
        "bad configuration is refused with one line that says where",
        arguments: [
            (
                "[[templates]]\nname = \"a\"\n[templates.pool]\nmin_idle = 5\nmax_total = 2\n",
                "template 'a': pool max_total (2) is below min_idle (5)"
            ),
            ("[[templates]]\nname = \"Bad.Name\"\n", "invalid template name 'Bad.Name'"),
            ("[[templates]]\nimage = \"x\"\n", "templates entry 1 has no name"),
            (
                "[[templates]]\nname = \"a\"\nmemroy = \"1g\"\n",
                "template 'a': templates.memroy is not a setting corral knows"
            ),
            (
                "[[templates]]\nname = \"a\"\nmemory = 5\n",
                "template 'a': templates.memory must be a string, not integer"
            ),
            ("[[templates]]\nname = \"a\"\nmemory = \"lots\"\n", "template 'a': templates.memory: invalid size 'lots'"),
            ("[[templates]]\nname = \"a\"\nttl = \"soon\"\n", "template 'a': templates.ttl: invalid duration 'soon'"),
            ("[[templates]]\nname = \"a\"\nruntime = \"x/y\"\n", "template 'a': invalid runtime 'x/y'"),
            ("[[templates]]\nname = \"a\"\n[[templates]]\nname = \"a\"\n", "template 'a' is defined twice"),
            ("[engine\n", "not valid TOML at line 1"),
            ("[service]\ncheck_interval = \"0s\"\n", "service.check_interval: it must be longer than 0"),
            ("[gateway]\nprivate_host = [\"a:1\"]\n", "gateway.private_host is not a setting corral knows"),
            (
                "[gateway]\nprivate_hosts = [\"127.0.0.1\"]\n",
                "gateway.private_hosts: invalid private host '127.0.0.1': it needs a port"
            ),
            ("[gateway]\nprivate_hosts = [\"*.corp:80\"]\n", "gateway.private_hosts: invalid private host"),
            ("[gateway]\nprivate_hosts = \"a:1\"\n", "gateway.private_hosts must be an array of strings"),
            (
                "[gateway.push_branches]\n\"Bad Tenant\" = [\"main\"]\n",
                "gateway.push_branches.Bad Tenant: invalid tenant id"
            ),
            ("[gateway.push_branches]\nacme = \"main\"\n", "gateway.push_branches.acme must be an array of strings"),
            (
                "[gateway.push_branches]\nacme = [\"a*b\"]\n",
                "gateway.push_branches.acme: invalid pushable branch 'a*b'"
            ),
            ("[[workers.pools]]\nmin_idle = 2\n", "workers.pools entry 1 has no template"),
            ("[[workers.pools]]\ntemplate = \"base\"\n", "workers.pools entry 1 needs min_idle, 0 or more"),
            ("[[workers.pools]]\ntemplate = \"base\"\nmin_idle = -1\n", "needs min_idle, 0 or more"),
            ("[[workers.pools]]\ngroup = \"Bad\"\ntemplate = \"base\"\nmin_idle = 1\n", "workers.pools.group"),
            (
                "[[workers.pools]]\ntemplate = \"base\"\nmin_idle = 1\n[[workers.pools]]\ngroup = \"default\"\ntemplate = \"base\"\nmin_idle = 2\n",
                "names group 'default' and template 'base' twice"
            ),
            ("[[workers.pools]]\ntemplate = \"base\"\nmin = 1\n", "workers.pools.min is not a setting corral knows"),
        ])
    func refused(text: String, message: String) throws {
        do {
            _ = try CorralConfiguration.parse(text, source: "test.toml")
            Issue.record("accepted: \(text)")
        } catch let error as CorralError {
            #expect(error.message.hasPrefix("test.toml: "), "\(error.message)")
            #expect(error.message.contains(message), "\(error.message)")
            #expect(!error.message.contains("\n"))
        }
    }

    @Test("[workers] TLS files, client_ca and advertise; [[workers.pools]] gives each group's target per template")
    func groupPoolTargets() throws {
        let configuration = try CorralConfiguration.parse(
            """
            [workers]
            listen = "0.0.0.0:7431"
            advertise = "https://cp-1.internal:7431"
            tls_cert = "/etc/corral/cp.pem"
            tls_key = "/etc/corral/cp.key"
            client_ca = "/etc/corral/workers-ca.pem"
            [[workers.pools]]
            template = "base"
            min_idle = 4
            [[workers.pools]]
            group = "vpc-acme"
            template = "base"
            min_idle = 0
            """)
        #expect(
            configuration.workers.pools == [
                .init(group: "default", template: "base", minIdle: 4),
                .init(group: "vpc-acme", template: "base", minIdle: 0),
            ])
        #expect(configuration.workers.clientCA == "/etc/corral/workers-ca.pem")
        #expect(configuration.workers.tlsCert == "/etc/corral/cp.pem")
        #expect(configuration.workers.advertise == "https://cp-1.internal:7431")
        #expect(try CorralConfiguration.parse("[workers]\nadvertise = \"\"").workers.advertise == nil)
    }

    /// Security review findings 1 and 2: the operator's gateway settings.
    @Test("[gateway] private_hosts and [gateway.push_branches] parse into the gateway's rules")
    func gatewaySettings() async throws {
        let configuration = try CorralConfiguration.parse(
            """
            [gateway]
            private_hosts = ["git.internal:8080", "127.0.0.1:3000", "[::1]:8443"]

            [gateway.push_branches]
            acme = ["main", "release/*"]
            tn-ci = []
            """, source: "c.toml")
        let gateway = configuration.gateway
        #expect(
            gateway.dialPolicy.privateHosts.map(\.description) == ["git.internal:8080", "127.0.0.1:3000", "[::1]:8443"])
        let acme = TenantID(unchecked: "acme")
        #expect(gateway.pushBranches.allows(tenant: acme, branch: "release/2", sandbox: nil))
        #expect(gateway.pushBranches.allows(tenant: acme, branch: "main", sandbox: nil))
        #expect(!gateway.pushBranches.allows(tenant: TenantID(unchecked: "tn-ci"), branch: "main", sandbox: nil))
        let empty = try CorralConfiguration.parse("")
        #expect(empty.gateway.dialPolicy.privateHosts.isEmpty)
        #expect(empty.gateway.pushBranches.branches.isEmpty)
        // The operator opened 127.0.0.1:3000 to network tenants: that one address and port only.
        #expect(
            try await gateway.dialPolicy.resolve(host: "127.0.0.1", port: 3000, tenant: acme).address == "127.0.0.1")
        await #expect(throws: CorralError.self) {
            _ = try await gateway.dialPolicy.resolve(host: "127.0.0.1", port: 3001, tenant: acme)
        }
    }

    @Test("discovery: --config, else CORRAL_CONFIG, else $STATE/corral.toml when present")
    func discovery() throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-discovery-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: state) }
        #expect(ConfigurationDiscovery.locate(explicit: nil, environment: [:], stateDirectory: state) == nil)
        try Data().write(to: state.appendingPathComponent("corral.toml"))
        #expect(
            ConfigurationDiscovery.locate(explicit: nil, environment: [:], stateDirectory: state)?.lastPathComponent
                == "corral.toml")
        #expect(
            ConfigurationDiscovery.locate(
                explicit: nil, environment: ["CORRAL_CONFIG": "/e.toml"], stateDirectory: state)?.path == "/e.toml")
        #expect(
            ConfigurationDiscovery.locate(
                explicit: "/x.toml", environment: ["CORRAL_CONFIG": "/e.toml"], stateDirectory: state)?.path
                == "/x.toml")
        #expect(throws: CorralError.self) {
            try ConfigurationDiscovery.load(
                explicit: state.appendingPathComponent("missing.toml").path, environment: [:], stateDirectory: state)
        }
    }
}
