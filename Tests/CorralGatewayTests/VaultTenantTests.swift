import CorralCore
import CorralPolicy
import Foundation
import TestSupport
import Testing

@testable import CorralGateway

/// Security review finding 1: the vault used to be one pool for every tenant. Each credential
/// now belongs to one tenant, and only that tenant's sandboxes are given it.
@Suite("Vault per tenant")
struct VaultTenantTests {
    static let alpha = TenantID(unchecked: "tn-alpha")
    static let beta = TenantID(unchecked: "tn-beta")

    func openVault(_ directory: URL) async throws -> Vault {
        try await Vault(configuration: Vault.Configuration(stateDirectory: directory, environment: [:]))
    }

    @Test("names are unique per tenant; resolve, list and rm see one tenant's credentials only")
    func perTenant() async throws {
        try await withTemporaryDirectory { directory in
            let vault = try await openVault(directory)
            let scope = try CredentialScope(parsing: "github.com/acme")
            try await vault.put(name: "gh", tenant: Self.alpha, scope: scope, secret: VaultSecret("alpha-token"))
            try await vault.put(name: "gh", tenant: Self.beta, scope: scope, secret: VaultSecret("beta-token"))
            try await vault.put(
                name: "wide", tenant: Self.alpha, scope: CredentialScope(parsing: "github.com"),
                secret: VaultSecret("alpha-wide"))
            let repository = try GitRepository(parsing: "github.com/acme/rocket")
            let other = try GitRepository(parsing: "github.com/other/thing")

            #expect(try await vault.resolve(for: repository, tenant: Self.alpha)?.secret == VaultSecret("alpha-token"))
            #expect(try await vault.resolve(for: repository, tenant: Self.beta)?.secret == VaultSecret("beta-token"))
            // Alpha's host-wide credential covers other/thing, for alpha only.
            #expect(try await vault.resolve(for: other, tenant: Self.alpha)?.entry.name == "wide")
            #expect(try await vault.resolve(for: other, tenant: Self.beta) == nil)
            #expect(try await vault.resolve(for: repository, tenant: .local) == nil)

            #expect(
                try await vault.list().map { "\($0.tenant)/\($0.name)" } == [
                    "tn-alpha/gh", "tn-alpha/wide", "tn-beta/gh",
                ])
            #expect(try await vault.list(tenant: Self.beta).map(\.name) == ["gh"])
            #expect(try await vault.list(tenant: .local).isEmpty)

            await #expect(throws: CorralError.self) { try await vault.remove(name: "wide", tenant: Self.beta) }
            try await vault.remove(name: "gh", tenant: Self.beta)
            #expect(try await vault.resolve(for: repository, tenant: Self.alpha)?.entry.name == "gh")
            #expect(try await vault.removeAll(tenant: Self.alpha) == ["gh", "wide"])
            #expect(try await vault.removeAll(tenant: Self.alpha).isEmpty)
            #expect(try await vault.list().isEmpty)
        }
    }

    @Test("brain keys are the operator's: a tenant's host-wide credential is never one")
    func brainKeysAreLocal() async throws {
        try await withTemporaryDirectory { directory in
            let vault = try await openVault(directory)
            let scope = try CredentialScope(parsing: "api.anthropic.com")
            try await vault.put(name: "a", tenant: Self.alpha, scope: scope, secret: VaultSecret("tenant-key"))
            #expect(try await vault.brainKey(host: "api.anthropic.com") == nil)
            try await vault.put(name: "b", scope: scope, secret: VaultSecret("operator-key"))
            #expect(try await vault.brainKey(host: "api.anthropic.com") == "operator-key")
        }
    }

    @Test("a version-1 vault is read with every credential the local tenant's, and written back as version 2")
    func migratesVersionOne() async throws {
        try await withTemporaryDirectory { directory in
            let vault = try await openVault(directory)
            let v1 = """
                {"version":1,"credentials":[{"name":"gh","scope":"github.com/acme","username":"x-access-token",\
                "created":"2025-01-02T03:04:05Z","secret":"old-token"}]}
                """
            try await vault.writeSealed(Data(v1.utf8))
            let reopened = try await openVault(directory)
            #expect(try await reopened.storedFormatVersion() == 1)
            let entries = try await reopened.list()
            #expect(entries.map(\.name) == ["gh"])
            #expect(entries.map(\.tenant) == [.local])
            let repository = try GitRepository(parsing: "github.com/acme/rocket")
            #expect(try await reopened.resolve(for: repository, tenant: .local)?.secret == VaultSecret("old-token"))
            #expect(try await reopened.resolve(for: repository, tenant: Self.alpha) == nil)

            try await reopened.put(
                name: "gh", tenant: Self.alpha, scope: CredentialScope(parsing: "github.com/acme"),
                secret: VaultSecret("alpha"))
            #expect(try await reopened.storedFormatVersion() == 2)
            #expect(try await reopened.list().map { "\($0.tenant)/\($0.name)" } == ["local/gh", "tn-alpha/gh"])

            // A format from the future is refused, not misread.
            try await vault.writeSealed(Data(#"{"version":3,"credentials":[]}"#.utf8))
            let error = try await #require(throws: CorralError.self) { try await reopened.list() }
            #expect(error.code == .unsupported)
        }
    }
}
