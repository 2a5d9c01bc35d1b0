import CorralCore
import CorralGateway
import CorralPolicy
import Foundation
import TestSupport
import Testing

/// A running gateway with a vault, a real git smart-HTTP upstream on loopback that demands a
/// token, and helpers to act as a sandbox: corral-init forwarding a loopback port to the
/// sandbox's socket, and plain git using it as its proxy.
struct GatewayFixture {
    let directory: URL
    let vault: Vault
    let gateway: Gateway
    let upstream: GitHTTPServer
    let logs: LogCapture
    let sink: RecordingSink
    /// The token the upstream accepts, stored in the vault as `upstream-token`.
    let token: String

    static let owner = "acme"

    /// Runs `body` with a fresh fixture; the gateway runs until `body` returns. Afterwards
    /// checks that the token appears in no log line and no decision.
    /// `configure` also gets the upstream's port, for settings that name it (private_hosts).
    static func with(
        configure: (inout Gateway.Configuration) -> Void = { _ in },
        upstream configureUpstream: (inout Gateway.Configuration, _ upstreamPort: Int) throws -> Void = { _, _ in },
        _ body: (GatewayFixture) async throws -> Void
    ) async throws {
        // A short base directory: unix socket paths must stay under 108 bytes.
        let directory = URL(fileURLWithPath: "/tmp/cg-\(UUID().uuidString.prefix(8))", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let token = "tok_\(UUID().uuidString)"
        let upstream = try GitHTTPServer(root: directory.appendingPathComponent("upstream"), tokens: [token])
        defer { upstream.stop() }
        let vault = try await Vault(
            configuration: Vault.Configuration(
                stateDirectory: directory.appendingPathComponent("state"), environment: [:]))
        var configuration = Gateway.Configuration(workDirectory: directory.appendingPathComponent("state/gateway"))
        configure(&configuration)
        try configureUpstream(&configuration, upstream.port)
        let logs = LogCapture()
        let sink = RecordingSink()
        let gateway = Gateway(configuration: configuration, vault: vault, eventSink: sink, logger: logs.logger())
        let fixture = GatewayFixture(
            directory: directory, vault: vault, gateway: gateway, upstream: upstream, logs: logs, sink: sink,
            token: token)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await gateway.run() }
            do {
                try await body(fixture)
            } catch {
                group.cancelAll()
                throw error
            }
            group.cancelAll()
            try await group.waitForAll()
        }
        fixture.expectTokenNowhere()
    }

    /// The upstream repository's address as grants name it.
    func repository(_ name: String) -> String { "127.0.0.1:\(upstream.port)/\(Self.owner)/\(name)" }

    /// The remote a sandbox uses: no credential in it.
    func remote(_ name: String) -> String { "http://git.corral/\(repository(name)).git" }

    /// Stores the upstream's token as `upstream-token` for `tenant` (the local one unless told).
    func storeToken(scope: String? = nil, tenant: TenantID = .local) async throws {
        try await vault.put(
            name: "upstream-token", tenant: tenant,
            scope: CredentialScope(parsing: scope ?? "127.0.0.1:\(upstream.port)/\(Self.owner)"),
            secret: VaultSecret(token))
    }

    /// A sandbox's gateway directory, made as the provisioner would, attached with `policy`.
    /// Returns the socket's path.
    @discardableResult
    func attach(_ sandbox: SandboxID, policy: GatewayPolicy, session: SessionID? = nil, tenant: TenantID = .local)
        async throws
        -> String
    {
        let gatewayDirectory = directory.appendingPathComponent("s/\(sandbox)", isDirectory: true)
        try FileManager.default.createDirectory(
            at: gatewayDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        try await gateway.attach(
            sandbox: sandbox, tenant: tenant, session: session, directory: gatewayDirectory, policy: policy)
        return gatewayDirectory.appendingPathComponent("gateway.sock").path
    }

    /// A sandbox attached and with corral-init forwarding to it; stopped after `body`.
    func withSandbox<T>(
        _ sandbox: SandboxID, policy: GatewayPolicy, session: SessionID? = nil, tenant: TenantID = .local,
        _ body: (Forwarder) async throws -> T
    ) async throws -> T {
        let socket = try await attach(sandbox, policy: policy, session: session, tenant: tenant)
        let forwarder = try await Forwarder.start(socket: socket)
        defer { forwarder.stop() }
        return try await body(forwarder)
    }

    /// Plain git as the agent runs it, with the sandbox's proxy and no credential anywhere.
    func git(_ arguments: [String], in workTree: URL? = nil, proxy: Forwarder) async throws -> Git.Result {
        let home = directory.appendingPathComponent("home")
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        var environment = Git.fixtureEnvironment
        environment["HOME"] = home.path
        var full = ["-c", "http.proxy=\(proxy.proxyURL)", "-c", "protocol.version=2", "-c", "credential.helper="]
        if let workTree { full += ["-C", workTree.path] }
        full += arguments
        let result = try await runOnThread { [full, environment] in
            try Git.runAllowingFailure(full, environment: environment)
        }
        #expect(!result.stdout.contains(token) && !result.stderr.contains(token), "git printed the token")
        return result
    }

    /// Clones `name` through the gateway into a new directory.
    func clone(_ name: String, proxy: Forwarder, into path: String = "work") async throws -> (URL, Git.Result) {
        let workTree = directory.appendingPathComponent(path)
        let result = try await git(["clone", remote(name), workTree.path], proxy: proxy)
        return (workTree, result)
    }

    /// Writes a file and commits it.
    func commit(in workTree: URL, file: String = "change.txt", content: String, proxy: Forwarder) async throws {
        try Data(content.utf8).write(to: workTree.appendingPathComponent(file))
        let added = try await git(["add", file], in: workTree, proxy: proxy)
        #expect(added.status == 0, "\(added.stderr)")
        let committed = try await git(["commit", "--quiet", "-m", "change \(file)"], in: workTree, proxy: proxy)
        #expect(committed.status == 0, "\(committed.stderr)")
    }

    /// The token, and the Basic header value it travels in, appear in no log line and no
    /// recorded decision.
    func expectTokenNowhere() {
        let spellings = [token, Data("x-access-token:\(token)".utf8).base64EncodedString()]
        for spelling in spellings {
            #expect(!logs.all.contains { $0.contains(spelling) }, "a log line holds the token")
            #expect(
                !sink.decisions.contains { "\($0)".contains(spelling) || $0.reason.contains(spelling) },
                "a decision holds the token")
        }
    }
}
