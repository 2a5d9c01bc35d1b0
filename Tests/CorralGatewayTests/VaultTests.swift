import CorralCore
import CorralGateway
import CorralPolicy
import Foundation
import TestSupport
import Testing

@Suite("Vault")
struct VaultTests {
    func openVault(_ directory: URL, environment: [String: String] = [:]) async throws -> Vault {
        try await Vault(configuration: Vault.Configuration(stateDirectory: directory, environment: environment))
    }

    @Test("a first use makes a 0600 key file and says where it is")
    func firstUseMakesKey() async throws {
        try await withTemporaryDirectory { directory in
            let vault = try await openVault(directory)
            let keyFile = directory.appendingPathComponent("vault.key")
            #expect(vault.keyOrigin == .created(keyFile))
            let attributes = try FileManager.default.attributesOfItem(atPath: keyFile.path)
            #expect((attributes[.posixPermissions] as? Int) == 0o600)
            let again = try await openVault(directory)
            #expect(again.keyOrigin == .file(keyFile))
        }
    }

    @Test("a key file that group or others can read is refused, naming the file and the chmod that fixes it")
    func looseKeyFileRefused() async throws {
        try await withTemporaryDirectory { directory in
            _ = try await openVault(directory)
            let keyFile = directory.appendingPathComponent("vault.key")
            for mode in [0o640, 0o604, 0o644] {
                try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: keyFile.path)
                let error = try await #require(throws: CorralError.self) { try await openVault(directory) }
                #expect(error.code == .permissionDenied)
                #expect(error.message.contains(keyFile.path))
                #expect(error.hint?.contains("chmod 600 \(keyFile.path)") == true)
            }
        }
    }

    @Test("a brain key is the one stored for the API's whole host; owner and repository scopes never match")
    func brainKeyByHost() async throws {
        try await withTemporaryDirectory { directory in
            let vault = try await openVault(directory)
            #expect(try await vault.brainKey(host: "api.anthropic.com") == nil)
            try await vault.put(
                name: "repo", scope: CredentialScope(parsing: "api.anthropic.com/acme/x"), secret: VaultSecret("r"))
            try await vault.put(
                name: "owner", scope: CredentialScope(parsing: "api.anthropic.com/acme"), secret: VaultSecret("o"))
            #expect(try await vault.brainKey(host: "api.anthropic.com") == nil)
            try await vault.put(
                name: "b", scope: CredentialScope(parsing: "API.anthropic.com"), secret: VaultSecret("key-b"))
            try await vault.put(
                name: "a", scope: CredentialScope(parsing: "api.anthropic.com"), secret: VaultSecret("key-a"))
            try await vault.put(
                name: "local", scope: CredentialScope(parsing: "127.0.0.1:8080"), secret: VaultSecret("key-l"))
            #expect(try await vault.brainKey(host: "api.anthropic.com") == "key-a")
            #expect(try await vault.brainKey(host: "127.0.0.1:8080") == "key-l")
            #expect(try await vault.brainKey(host: "127.0.0.1") == nil)
            #expect(try await vault.brainKey(host: "api.openai.com") == nil)
        }
    }

    @Test("values are sealed at rest, and another key cannot open them")
    func sealedAtRest() async throws {
        try await withTemporaryDirectory { directory in
            let vault = try await openVault(directory)
            let secret = "ghp_sealed_\(UUID().uuidString)"
            try await vault.put(
                name: "gh", scope: CredentialScope(parsing: "github.com/apple"), secret: VaultSecret(secret))
            let sealed = try Data(contentsOf: directory.appendingPathComponent("vault.sealed"))
            #expect(!String(decoding: sealed, as: UTF8.self).contains(secret))
            #expect(!String(decoding: sealed, as: UTF8.self).contains("github.com"))
            let attributes = try FileManager.default.attributesOfItem(
                atPath: directory.appendingPathComponent("vault.sealed").path)
            #expect((attributes[.posixPermissions] as? Int) == 0o600)

            let otherKey = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            let error = try await #require(throws: CorralError.self) {
                try await openVault(directory, environment: ["CORRAL_VAULT_KEY": otherKey])
            }
            #expect(error.message.contains("wrong key"))
            #expect(!error.description.contains(secret))
        }
    }

    @Test("a key from the environment is used as it is, and no key file is written")
    func environmentKey() async throws {
        try await withTemporaryDirectory { directory in
            let key = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            let vault = try await openVault(directory, environment: ["CORRAL_VAULT_KEY": key])
            #expect(vault.keyOrigin == .environment(variable: "CORRAL_VAULT_KEY"))
            try await vault.put(name: "a", scope: CredentialScope(parsing: "example.com"), secret: VaultSecret("t"))
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("vault.key").path))
            let reopened = try await openVault(directory, environment: ["CORRAL_VAULT_KEY": key])
            #expect(try await reopened.list().map(\.name) == ["a"])

            let bad = try await #require(throws: CorralError.self) {
                try await openVault(directory, environment: ["CORRAL_VAULT_KEY": "c2hvcnQ="])
            }
            #expect(bad.message.contains("CORRAL_VAULT_KEY"))
        }
    }

    @Test("a vault whose key file is gone is not silently given a new key")
    func missingKeyWithVault() async throws {
        try await withTemporaryDirectory { directory in
            let vault = try await openVault(directory)
            try await vault.put(name: "a", scope: CredentialScope(parsing: "example.com"), secret: VaultSecret("t"))
            try FileManager.default.removeItem(at: directory.appendingPathComponent("vault.key"))
            let error = try await #require(throws: CorralError.self) { try await openVault(directory) }
            #expect(error.message.contains("key file"))
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("vault.key").path))
        }
    }

    @Test("the most specific scope wins: repository over owner over host, ties by name")
    func bestScope() async throws {
        try await withTemporaryDirectory { directory in
            let vault = try await openVault(directory)
            try await vault.put(
                name: "host", scope: CredentialScope(parsing: "git.example.com"), secret: VaultSecret("1"))
            try await vault.put(
                name: "owner", scope: CredentialScope(parsing: "git.example.com/acme"), secret: VaultSecret("2"))
            try await vault.put(
                name: "repo", scope: CredentialScope(parsing: "git.example.com/acme/rocket.git"),
                secret: VaultSecret("3"))
            try await vault.put(
                name: "b-tie", scope: CredentialScope(parsing: "other.example.com/x"), secret: VaultSecret("4"))
            try await vault.put(
                name: "a-tie", scope: CredentialScope(parsing: "other.example.com/x"), secret: VaultSecret("5"))

            func best(_ repository: String) async throws -> String? {
                try await vault.resolve(for: GitRepository(parsing: repository), tenant: .local)?.entry.name
            }
            #expect(try await best("git.example.com/acme/rocket") == "repo")
            #expect(try await best("git.example.com/acme/anvil") == "owner")
            #expect(try await best("git.example.com/Acme/rocket") == "host")  // owners compare exactly
            #expect(try await best("git.example.com/other/thing") == "host")
            #expect(try await best("GIT.EXAMPLE.COM/acme/rocket") == "repo")  // hosts do not
            #expect(try await best("other.example.com/x/y") == "a-tie")
            #expect(try await best("elsewhere.example.com/acme/rocket") == nil)

            try await vault.put(
                name: "repo", scope: CredentialScope(parsing: "git.example.com/acme/rocket"), username: "bot",
                secret: VaultSecret("6"))
            #expect(try await vault.list().filter { $0.name == "repo" }.map(\.username) == ["bot"])
            try await vault.remove(name: "repo")
            #expect(try await best("git.example.com/acme/rocket") == "owner")
            await #expect(throws: CorralError.self) { try await vault.remove(name: "repo") }
        }
    }

    @Test("bad names, scopes, user names and values are refused with a reason")
    func badInput() async throws {
        try await withTemporaryDirectory { directory in
            let vault = try await openVault(directory)
            let scope = try CredentialScope(parsing: "example.com")
            await #expect(throws: CorralError.self) {
                try await vault.put(name: "../x", scope: scope, secret: VaultSecret("t"))
            }
            await #expect(throws: CorralError.self) {
                try await vault.put(name: "ok", scope: scope, username: "a:b", secret: VaultSecret("t"))
            }
            await #expect(throws: CorralError.self) {
                try await vault.put(name: "ok", scope: scope, secret: VaultSecret(""))
            }
            await #expect(throws: CorralError.self) {
                try await vault.put(name: "ok", scope: scope, secret: VaultSecret("two\nlines"))
            }
            for text in ["", "a/b/c/d", "host/../x", "ho st", "example.com:99999", "example.com/.."] {
                #expect(throws: CorralError.self, "scope \(text)") { try CredentialScope(parsing: text) }
            }
        }
    }

    @Test("a secret prints, dumps and interpolates as <redacted>")
    func secretRedacted() async throws {
        try await withTemporaryDirectory { directory in
            let token = "ghp_never_\(UUID().uuidString)"
            let secret = VaultSecret(token)
            var dumped = ""
            dump(secret, to: &dumped)
            #expect(!"\(secret)".contains(token))
            #expect(!String(reflecting: secret).contains(token))
            #expect(!dumped.contains(token))
            let vault = try await openVault(directory)
            try await vault.put(name: "gh", scope: CredentialScope(parsing: "github.com"), secret: secret)
            let resolved = try #require(
                try await vault.resolve(for: GitRepository(parsing: "github.com/a/b"), tenant: .local))
            var dumpedResolved = ""
            dump(resolved, to: &dumpedResolved)
            #expect(!"\(resolved)".contains(token))
            #expect(!dumpedResolved.contains(token))
        }
    }
}
