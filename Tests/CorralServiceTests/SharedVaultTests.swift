import CorralCore
import CorralGateway
import CorralPolicy
import CorralService
import CorralSession
import CorralSessionPostgres
import Foundation
import Logging
import TestSupport
import Testing

/// The vault beside a PostgreSQL store: every replica reads the same credentials, and
/// `corral store copy` moves the sealed vault without opening it.
@Suite("The vault in PostgreSQL")
struct SharedVaultTests {
    static let logger: Logger = {
        var logger = Logger(label: "corral.test")
        logger.logLevel = .warning
        return logger
    }()

    static func key() -> String {
        Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }

    /// A vault as a replica opens it: its own state directory, the store's row, `key`.
    static func open(_ store: any SessionStore, state: URL, key: String) async throws -> Vault {
        try await Vault(
            configuration: Vault.Configuration(stateDirectory: state, environment: ["CORRAL_VAULT_KEY": key]),
            storage: SessionStoreSelection.vaultStorage(store))
    }

    @Test(
        "two replicas over one store: a credential put through one resolves through the other, a removal is seen by both; another key is refused, naming the row without its password",
        .enabled(if: TestEnvironment.shouldRunStoreTests, Comment(rawValue: TestEnvironment.storeSkipReason)))
    func twoReplicas() async throws {
        guard let url = TestEnvironment.freshStoreURL() else { return }
        // Two connections to one schema, as two replicas have.
        try await withSchema(url, logger: Self.logger) { first in
            try await withSchema(url, logger: Self.logger) { second in
                try await withTemporaryDirectory { root in
                    let key = Self.key()
                    let one = try await Self.open(first, state: root.appendingPathComponent("one"), key: key)
                    let two = try await Self.open(second, state: root.appendingPathComponent("two"), key: key)
                    let password = try #require(URLComponents(string: url)?.password)
                    #expect(one.location.contains("vault") && !one.location.contains(password), "\(one.location)")

                    let repository = try GitRepository(parsing: "git.example.com/acme/rocket")
                    try await one.put(
                        name: "gh", tenant: TenantID(unchecked: "acme"),
                        scope: CredentialScope(parsing: "git.example.com"),
                        secret: VaultSecret("token-1"))
                    let resolved = try await two.resolve(for: repository, tenant: TenantID(unchecked: "acme"))
                    #expect(resolved?.secret == VaultSecret("token-1"))
                    #expect(try await two.list().map(\.name) == ["gh"])
                    // Nothing of it is on either replica's disk.
                    for state in ["one", "two"] {
                        #expect(
                            !FileManager.default.fileExists(
                                atPath: root.appendingPathComponent("\(state)/vault.sealed").path))
                    }

                    try await two.remove(name: "gh", tenant: TenantID(unchecked: "acme"))
                    #expect(try await one.resolve(for: repository, tenant: TenantID(unchecked: "acme")) == nil)

                    // Changes through both at once: none is lost (the row's lock).
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for index in 0..<8 {
                            let vault = index.isMultiple(of: 2) ? one : two
                            group.addTask {
                                try await vault.put(
                                    name: "c\(index)", scope: CredentialScope(parsing: "h\(index).example.com"),
                                    secret: VaultSecret("v\(index)"))
                            }
                        }
                        try await group.waitForAll()
                    }
                    #expect(try await one.list().count == 8)

                    let wrong = await #expect(throws: CorralError.self) {
                        try await Self.open(second, state: root.appendingPathComponent("three"), key: Self.key())
                    }
                    #expect(wrong?.code == .permissionDenied)
                    #expect(wrong?.message.contains("vault") == true && wrong?.message.contains(password) == false)
                }
            }
        }
    }

    @Test(
        "store copy moves the sealed vault both ways, opened with the same key; a target with a vault of its own is refused",
        .enabled(if: TestEnvironment.shouldRunStoreTests, Comment(rawValue: TestEnvironment.storeSkipReason)))
    func copied() async throws {
        guard let url = TestEnvironment.freshStoreURL() else { return }
        try await withTemporaryDirectory { root in
            let key = Self.key()
            let (source, back, other) = (
                root.appendingPathComponent("a"), root.appendingPathComponent("b"), root.appendingPathComponent("c")
            )
            for state in [source, other] {
                let vault = try await Vault(
                    configuration: Vault.Configuration(stateDirectory: state, environment: ["CORRAL_VAULT_KEY": key]))
                try await vault.put(
                    name: state == source ? "gh" : "other", scope: CredentialScope(parsing: "git.example.com"),
                    secret: VaultSecret("token"))
            }
            let report = try await StoreCopy.run(from: .files(source), to: .postgres(url), logger: Self.logger)
            #expect(report.vault && report.verified)
            try await withSchema(url, logger: Self.logger) { database in
                let shared = try await Self.open(database, state: root.appendingPathComponent("replica"), key: key)
                #expect(try await shared.list().map(\.name) == ["gh"])

                // Run again: the same sealed bytes are there already.
                #expect(try await StoreCopy.run(from: .files(source), to: .postgres(url), logger: Self.logger).vault)
                let home = try await StoreCopy.run(from: .postgres(url), to: .files(back), logger: Self.logger)
                #expect(home.vault && home.verified)
                let returned = try await Vault(
                    configuration: Vault.Configuration(stateDirectory: back, environment: ["CORRAL_VAULT_KEY": key]))
                #expect(try await returned.list().map(\.name) == ["gh"])

                let refused = await #expect(throws: CorralError.self) {
                    try await StoreCopy.run(from: .files(other), to: .postgres(url), logger: Self.logger)
                }
                #expect(refused?.code == .alreadyExists)
                #expect(try await shared.list().map(\.name) == ["gh"], "the refused copy changed the vault")
            }
        }
    }
}
