import CorralCore
import CorralGateway
import CorralSandbox
import Foundation
import TestSupport
import Testing

@testable import CorralService

#if canImport(Glibc)
import Glibc
#endif

/// The security review's findings at provisioning, as a tenant of the service would try them:
/// through `provision` with the service built as `corral serve` builds it.
@Suite("Workspaces: what a network tenant may ask for", .engine, .serialized)
struct WorkspaceSecurityTests {
    static let beta = TenantID(unchecked: "tn-beta")

    /// Security review findings 1 and 2: a network tenant asks for a pushable `main`, and for
    /// repositories whose host is the host's own loopback (to probe its ports). Both are
    /// refused with `.permissionDenied` before a container is made, and nothing is connected to.
    @Test("a network tenant's pushable main or loopback repository is refused before anything is made")
    func refusedAtProvisioning() async throws {
        let probe = try ListeningProbe()
        defer { probe.close() }
        try await WorkspaceFixture.with { fixture in
            try await fixture.vault.put(
                name: "beta", tenant: Self.beta, scope: CredentialScope(parsing: "127.0.0.1:\(fixture.upstream.port)"),
                secret: VaultSecret(fixture.token))
            var main = try fixture.request {
                $0.tenant = Self.beta
                $0.workspace = try SandboxWorkspace(
                    repository: "github.com/acme/rocket", branch: "main", write: true)
            }
            await fixture.expectProvisionFails(main, "branch main", "[gateway.push_branches]")
            main.tenant = .local
            main.workspace = try SandboxWorkspace(repository: fixture.repository("rocket"), branch: "main", write: true)
            // The operator (the local tenant) may name any branch.
            let operatorSandbox = try await fixture.provisioner.provision(main)
            try await operatorSandbox.remove()

            let before = fixture.upstream.requests.count
            let hosts =
                ["127.0.0.1", "127.1", "localhost", "[::1]", "2130706433", "0x7f.0.0.1", "[::ffff:127.0.0.1]"].map {
                    "\($0):\(probe.port)"
                } + ["127.0.0.1:\(fixture.upstream.port)"]
            for host in hosts {
                let request = try fixture.request {
                    $0.tenant = Self.beta
                    $0.workspace = try SandboxWorkspace(repository: "\(host)/acme/rocket")
                }
                await fixture.expectProvisionFails(request, host, "repository \(host)/acme/rocket is refused")
                do {
                    _ = try await fixture.provisioner.provision(request)
                } catch let error as CorralError {
                    #expect(error.code == .permissionDenied, "\(host): \(error)")
                    #expect(error.message.contains("private_hosts"), "\(host): \(error.message)")
                }
            }
            #expect(fixture.upstream.requests.count == before, "the upstream on loopback was contacted")
        }
        #expect(!probe.acceptedAny(), "a connection reached the probed port")
    }

    /// Security review findings 1 and 2: what the operator opens in corral.toml, a network
    /// tenant gets, with its own credential: the one private host, and the branches
    /// push_branches names for it.
    @Test(
        "with private_hosts and push_branches, a network tenant clones with its own credential and pushes what it may")
    func operatorOpens() async throws {
        try await WorkspaceFixture.with(gateway: { port in
            var settings = CorralConfiguration.GatewaySettings()
            settings.dialPolicy = try DialPolicy(privateHosts: ["127.0.0.1:\(port)"])
            settings.pushBranches = try PushBranchRules([Self.beta: ["release/*"]])
            return settings
        }) { fixture in
            // Without a credential of its own, the local tenant's does not serve it.
            let request = try fixture.request {
                $0.tenant = Self.beta
                $0.workspace = try SandboxWorkspace(
                    repository: fixture.repository("rocket"), branch: "release/7", write: true)
            }
            await fixture.expectProvisionFails(request, "no credential of its own", "the vault holds none")
            try await fixture.vault.put(
                name: "beta", tenant: Self.beta, scope: CredentialScope(parsing: "127.0.0.1:\(fixture.upstream.port)"),
                secret: VaultSecret(fixture.token))
            let sandbox = try await fixture.provisioner.provision(request)
            let pushed = try await fixture.sh(
                sandbox, "git commit -q --allow-empty -m release && git push -q origin HEAD && echo pushed")
            #expect(pushed.stdout == "pushed\n", "\(pushed.stderr)")
            #expect(fixture.upstream.head(owner: WorkspaceFixture.owner, name: "rocket", branch: "release/7") != nil)
            let toMain = try await fixture.sh(sandbox, "git push -q origin HEAD:main")
            #expect(toMain.status.exitCode != 0)
            #expect(toMain.stderr.contains("refs/heads/main is not pushable from this sandbox"), "\(toMain.stderr)")
            try await sandbox.remove()

            var main = request
            main.workspace?.branch = "main"
            await fixture.expectProvisionFails(main, "branch main", "[gateway.push_branches]")
        }
    }
}

/// A loopback port that listens and never accepts: whether anyone connected shows afterwards
/// in its backlog.
final class ListeningProbe: Sendable {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CorralError(.io, "socket failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            Glibc.close(fd)
            throw CorralError(.io, "cannot listen on loopback")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: actual.sin_port))
    }

    /// True when a connection waits in the backlog.
    func acceptedAny() -> Bool {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        let accepted = accept(fd, nil, nil)
        guard accepted >= 0 else { return false }
        Glibc.close(accepted)
        return true
    }

    func close() { Glibc.close(fd) }
}
