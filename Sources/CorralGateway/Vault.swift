import CorralCore
import CorralPolicy
import Crypto
import Foundation

/// Credentials for git hosts, sealed at rest with AES-GCM, on the host side only.
///
/// The whole vault is one sealed document: a magic header, then an AES-GCM box holding JSON.
/// It is kept in `vault.sealed` in the state directory, or, when replicas share a PostgreSQL
/// store, in a row of its `record_lists` (`VaultStorage`), so that every replica reads the same
/// credentials. The key comes from `CORRAL_VAULT_KEY` (base64), else from a key file
/// (`vault.key`, mode 0600); a key file that group or others may read is refused, and a first
/// use with neither makes a new key file (see `keyOrigin`). Every call reads the vault afresh,
/// so a running gateway sees what `corral vault put` stored a moment ago; changes take an
/// exclusive lock (an flock, or the row's lock), then replace the document whole.
public final class Vault: Sendable {
    public struct Configuration: Sendable {
        /// The sealed vault.
        public var file: URL
        /// The key file used when the environment variable is unset.
        public var keyFile: URL
        /// Holds the key in base64; takes precedence over the key file.
        public var keyEnvironmentVariable = "CORRAL_VAULT_KEY"
        public var environment: [String: String]
        /// Make a key file when there is no key at all (and no vault it could belong to).
        public var createKeyIfMissing = true

        /// `vault.sealed` and `vault.key` in `stateDirectory`; `CORRAL_VAULT_KEY_FILE`
        /// names another key file.
        public init(stateDirectory: URL, environment: [String: String] = ProcessInfo.processInfo.environment) {
            self.file = stateDirectory.appendingPathComponent("vault.sealed")
            if let keyFile = environment["CORRAL_VAULT_KEY_FILE"], !keyFile.isEmpty {
                self.keyFile = URL(fileURLWithPath: keyFile)
            } else {
                self.keyFile = stateDirectory.appendingPathComponent("vault.key")
            }
            self.environment = environment
        }
    }

    /// The default user name for token credentials; GitHub and others accept any name with a
    /// token as the password.
    public static let defaultUsername = "x-access-token"

    public let configuration: Configuration
    /// Where the key came from; `.created` when this call made a new key file.
    public let keyOrigin: VaultKeyOrigin
    private let key: SymmetricKey
    private let storage: any VaultStorage
    private static let magic = Array("CORRALV1".utf8)

    /// The vault in `configuration.file`.
    public convenience init(configuration: Configuration) async throws {
        try await self.init(configuration: configuration, storage: nil)
    }

    /// The vault in `storage` (the PostgreSQL store's row), or in `configuration.file` when nil.
    package convenience init(configuration: Configuration, storage: (any VaultStorage)?) async throws {
        let storage = storage ?? VaultFile(file: configuration.file)
        try self.init(configuration: configuration, storage: storage, sealed: try await storage.read())
    }

    /// The vault in `storage` (or the file) when there is one; nil, and no key made, when there
    /// is none yet.
    package static func existing(configuration: Configuration, storage: (any VaultStorage)?) async throws -> Vault? {
        var configuration = configuration
        configuration.createKeyIfMissing = false
        let storage = storage ?? VaultFile(file: configuration.file)
        guard let sealed = try await storage.read() else { return nil }
        return try Vault(configuration: configuration, storage: storage, sealed: sealed)
    }

    /// `sealed` is what `storage` holds now, read once by the caller.
    private init(configuration: Configuration, storage: any VaultStorage, sealed: [UInt8]?) throws {
        self.configuration = configuration
        self.storage = storage
        (key, keyOrigin) = try VaultKeyLoader.load(
            fileURL: configuration.keyFile, environmentVariable: configuration.keyEnvironmentVariable,
            environment: configuration.environment, vaultExists: sealed != nil,
            createIfMissing: configuration.createKeyIfMissing)
        // Open the vault once now, so that a wrong key is reported at startup.
        _ = try open(sealed)
    }

    /// Where the sealed vault is: a file's path, or the store's URL and the row's name.
    public var location: String { storage.location }

    // MARK: Operations

    /// Stores a credential for `tenant`'s sandboxes, replacing that tenant's credential of the
    /// same name. Names are unique per tenant; two tenants may each have a `gh`.
    public func put(
        name: String, tenant: TenantID = .local, scope: CredentialScope, username: String = Vault.defaultUsername,
        secret: VaultSecret
    ) async throws {
        try Self.checkName(name)
        try Self.checkUsername(username)
        try Self.checkSecret(secret)
        try await modify { records in
            records.removeAll { $0.name == name && $0.tenant == tenant }
            records.append(
                Record(
                    name: name, tenant: tenant, scope: scope, username: username, created: Date(),
                    secret: secret.value))
        }
    }

    /// Every credential of every tenant, by tenant and name, without values.
    public func list() async throws -> [VaultEntry] {
        try await load().map(\.entry).sorted(by: Self.order)
    }

    /// `tenant`'s credentials, by name, without values.
    public func list(tenant: TenantID) async throws -> [VaultEntry] {
        try await load().filter { $0.tenant == tenant }.map(\.entry).sorted(by: Self.order)
    }

    /// Removes `tenant`'s credential `name`; not found when that tenant has none of that name.
    public func remove(name: String, tenant: TenantID = .local) async throws {
        try Self.checkName(name)
        try await modify { records in
            guard records.contains(where: { $0.name == name && $0.tenant == tenant }) else {
                throw CorralError.notFound(
                    "tenant \(tenant) has no credential named '\(name)' in the vault",
                    hint: "`corral vault ls --tenant \(tenant)` lists them")
            }
            records.removeAll { $0.name == name && $0.tenant == tenant }
        }
    }

    /// Removes every credential of `tenant` (for `corral tenant rm --purge`); returns their
    /// names, sorted. Nothing is written when it has none.
    @discardableResult
    public func removeAll(tenant: TenantID) async throws -> [String] {
        var removed: [String] = []
        try await modify { records in
            removed = records.filter { $0.tenant == tenant }.map(\.name).sorted()
            guard !removed.isEmpty else { throw Unchanged() }
            records.removeAll { $0.tenant == tenant }
        }
        return removed
    }

    /// The credential of `tenant` whose scope covers `repository` most specifically. Another
    /// tenant's credentials are never considered, whatever their scope. Between equally
    /// specific scopes, the first name in sort order wins, so the choice never depends on
    /// storage order.
    public func resolve(for repository: GitRepository, tenant: TenantID) async throws -> ResolvedCredential? {
        let best = try await load()
            .filter { $0.tenant == tenant && $0.scope.covers(repository) }
            .min { lhs, rhs in
                lhs.scope.specificity != rhs.scope.specificity
                    ? lhs.scope.specificity > rhs.scope.specificity : lhs.name < rhs.name
            }
        return best.map { ResolvedCredential(entry: $0.entry, secret: VaultSecret($0.secret)) }
    }

    /// The key stored for a model API's host (a scope of just `HOST`, such as
    /// `api.anthropic.com`, or `127.0.0.1:8080` with its port), for the harness to send to
    /// its brain. Brain keys are the operator's: only the local tenant's credentials count,
    /// never one a tenant stored for its sandboxes. This is the one way a value leaves the
    /// vault outside the gateway: it goes into a request header on the host, never into a
    /// sandbox or an event. Between several, the first name in sort order wins.
    public func brainKey(host: String) async throws -> String? {
        let host = host.lowercased()
        return try await load()
            .filter { $0.tenant == .local && $0.scope.host == host && $0.scope.owner == nil }
            .min { $0.name < $1.name }?.secret
    }

    private static func order(_ lhs: VaultEntry, _ rhs: VaultEntry) -> Bool {
        lhs.tenant != rhs.tenant ? lhs.tenant < rhs.tenant : lhs.name < rhs.name
    }

    // MARK: Storage

    private struct Record: Codable {
        var name: String
        /// Absent in format version 1, where every credential was the operator's.
        var tenant: TenantID
        var scope: CredentialScope
        var username: String
        var created: Date
        var secret: String

        init(name: String, tenant: TenantID, scope: CredentialScope, username: String, created: Date, secret: String) {
            self.name = name
            self.tenant = tenant
            self.scope = scope
            self.username = username
            self.created = created
            self.secret = secret
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            name = try container.decode(String.self, forKey: .name)
            tenant = try container.decodeIfPresent(TenantID.self, forKey: .tenant) ?? .local
            scope = try container.decode(CredentialScope.self, forKey: .scope)
            username = try container.decode(String.self, forKey: .username)
            created = try container.decode(Date.self, forKey: .created)
            secret = try container.decode(String.self, forKey: .secret)
        }

        var entry: VaultEntry {
            VaultEntry(name: name, tenant: tenant, scope: scope, username: username, created: created)
        }
    }

    /// Version 2 gives every credential a tenant. Version 1 had none: read as the local
    /// tenant's, and written back as version 2 on the next change.
    private struct Document: Codable {
        static let currentVersion = 2
        var version = Document.currentVersion
        var credentials: [Record]
    }

    /// Thrown inside `modify` to leave the vault as it is.
    private struct Unchanged: Error {}

    private func modify(_ change: (inout [Record]) throws -> Void) async throws {
        try await storage.modify { sealed in
            var records = try open(sealed)?.credentials ?? []
            do {
                try change(&records)
            } catch is Unchanged {
                return nil
            }
            let sorted = records.sorted { $0.tenant != $1.tenant ? $0.tenant < $1.tenant : $0.name < $1.name }
            return try seal(JSONEncoder.vault.encode(Document(credentials: sorted)))
        }
    }

    /// The format version of the sealed document as stored; nil with no vault yet.
    func storedFormatVersion() async throws -> Int? {
        try open(await storage.read())?.version
    }

    private func load() async throws -> [Record] {
        try open(await storage.read())?.credentials ?? []
    }

    private func open(_ sealed: [UInt8]?) throws -> Document? {
        guard let sealed else { return nil }
        let location = storage.location
        guard sealed.count > Self.magic.count, Array(sealed.prefix(Self.magic.count)) == Self.magic else {
            throw CorralError(
                .corrupted, "\(location) is not a corral vault",
                hint: "move it aside; corral makes a new vault on the next `corral vault put`")
        }
        let plaintext: Data
        do {
            let box = try AES.GCM.SealedBox(combined: sealed.dropFirst(Self.magic.count))
            plaintext = try AES.GCM.open(box, using: key, authenticating: Self.magic)
        } catch {
            throw CorralError(
                .permissionDenied,
                "cannot open the vault \(location) with the key from \(keyOrigin): wrong key, or the vault was altered",
                hint:
                    "use the key the vault was sealed with (\(configuration.keyEnvironmentVariable) or the key file; replicas sharing a store share the key)"
            )
        }
        do {
            let document = try JSONDecoder.vault.decode(Document.self, from: plaintext)
            guard (1...Document.currentVersion).contains(document.version) else {
                throw CorralError(
                    .unsupported,
                    "the vault \(location) has format version \(document.version); this corral reads 1 and 2",
                    hint: "use the corral that wrote it, or a newer one")
            }
            if document.version == 1, document.credentials.contains(where: { $0.tenant != .local }) {
                throw CorralError(.corrupted, "the vault \(location) holds malformed data")
            }
            return document
        } catch let error as CorralError {
            throw error
        } catch {
            throw CorralError(.corrupted, "the vault \(location) holds malformed data")
        }
    }

    private func seal(_ plaintext: Data) throws -> [UInt8] {
        let box = try AES.GCM.seal(plaintext, using: key, authenticating: Self.magic)
        guard let combined = box.combined else {
            throw CorralError(.internalError, "AES-GCM gave no combined box")
        }
        return Self.magic + Array(combined)
    }

    /// Seals `plaintext` (a document's JSON) into the vault. Internal so that tests can write a
    /// document of an older format.
    func writeSealed(_ plaintext: Data) async throws {
        let sealed = try seal(plaintext)
        try await storage.modify { _ in sealed }
    }

    // MARK: Checks

    static func checkName(_ name: String) throws {
        let valid =
            !name.isEmpty && name.utf8.count <= 64
            && name.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "."
                    || $0 == "_" || $0 == "-"
            }
            && !name.hasPrefix("-") && !name.hasPrefix(".")
        guard valid else {
            throw CorralError.invalidArgument(
                "invalid credential name '\(name.prefix(80))'",
                hint: "names are 1-64 letters, digits, '.', '_' and '-', starting with a letter or digit")
        }
    }

    static func checkUsername(_ username: String) throws {
        let valid =
            !username.isEmpty && username.utf8.count <= 256
            && username.unicodeScalars.allSatisfy { $0.value > 0x20 && $0.value != 0x7f && $0 != ":" }
        guard valid else {
            throw CorralError.invalidArgument(
                "invalid user name for a credential: it must be 1-256 visible characters without ':'")
        }
    }

    static func checkSecret(_ secret: VaultSecret) throws {
        guard !secret.value.isEmpty else {
            throw CorralError.invalidArgument(
                "the credential's value is empty", hint: "pass the token on standard input")
        }
        guard secret.value.utf8.count <= 16384 else {
            throw CorralError.invalidArgument("the credential's value is longer than 16 KiB")
        }
        guard secret.value.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7f }) else {
            throw CorralError.invalidArgument(
                "the credential's value holds control characters (a line break in the middle?)",
                hint: "pass exactly one line on standard input")
        }
    }
}

extension JSONEncoder {
    fileprivate static var vault: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}

extension JSONDecoder {
    fileprivate static var vault: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
