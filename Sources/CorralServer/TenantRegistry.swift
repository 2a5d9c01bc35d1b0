import CorralCore
import Crypto
import Foundation
import Synchronization

/// Tenants and their bearer tokens, kept in `$STATE/tenants.json`. Only a token's SHA-256 is
/// stored: the token itself is printed once, when the tenant is added, and never again.
///
/// Every change is a read-modify-write under an flock on `tenants.json.lock`, so that
/// `corral tenant add` in several processes at once, and a running service, never lose one
/// another's changes. Each change opens the lock file anew, and flock locks belong to an open
/// file, so two tasks of one process are serialised the same way. Readers take no lock: the
/// file is replaced by rename, whole.
public final class TenantRegistry: Sendable {
    public struct Tenant: Codable, Sendable, Hashable {
        public var id: TenantID
        public var tokenSHA256: String
        public var created: Date
    }

    /// What a presented bearer token turned out to be.
    public enum Authentication: Sendable, Hashable {
        /// A tenant's token; `tokenSHA256` tells this tenant apart from a later one of the same name.
        case tenant(TenantID, tokenSHA256: String)
        /// A token stored under a name the system uses (an old or hand-edited tenants.json):
        /// never accepted.
        case reserved(TenantID)
        case unknown
    }

    public let file: URL
    private var lockFile: URL { file.appendingPathExtension("lock") }
    /// The file's bytes at the last read and what they held: a request re-reads the file and
    /// parses it again only when the bytes changed. Bytes, not the modification time, because
    /// two writes within one tick of the file system's clock would look alike.
    private let cache = Mutex<(bytes: Data?, tenants: [Tenant])>((nil, []))

    public init(stateDirectory: URL) {
        file = stateDirectory.appendingPathComponent("tenants.json")
    }

    // MARK: Names the system uses

    /// Names no tenant may have: `local` is the operator on the host (the unix socket, the
    /// command line without a service); the others are names the system has or will have
    /// for itself (`default`: the default worker group; `all`/`none`: selectors in commands
    /// and policies; `pool`, `worker`, `service`: parts of the system). docs/architecture.md
    /// lists them.
    public static let reservedNames: Set<String> = [
        "local", "operator", "system", "default", "corral", "all", "none", "root", "admin", "anonymous", "public",
        "pool", "worker", "service", "internal", "unknown",
    ]
    /// Prefixes kept for the system's own names.
    public static let reservedPrefixes = ["corral-", "system-"]

    public static func isReserved(_ id: TenantID) -> Bool {
        reservedNames.contains(id.rawValue) || reservedPrefixes.contains { id.rawValue.hasPrefix($0) }
    }

    /// Refuses a reserved name with one line and a hint.
    public static func checkNotReserved(_ id: TenantID) throws {
        guard isReserved(id) else { return }
        throw CorralError.invalidArgument(
            "'\(id)' is a name the system uses and cannot be a tenant",
            hint: "pick another name; reserved: \(reservedNames.sorted().joined(separator: ", ")) "
                + "and names starting with \(reservedPrefixes.joined(separator: " or "))")
    }

    // MARK: Changes

    /// Adds a tenant and returns its token (`corral_` and 43 base64url characters).
    public func add(_ id: TenantID) throws -> String {
        try Self.checkNotReserved(id)
        let token = Self.makeToken()
        try modify { tenants in
            guard !tenants.contains(where: { $0.id == id }) else {
                throw CorralError(
                    .alreadyExists, "tenant '\(id)' exists already", hint: "pick another name, or remove it first")
            }
            tenants.append(Tenant(id: id, tokenSHA256: Self.hash(token), created: Date()))
        }
        return token
    }

    /// Removes a tenant; its token stops working at once. Returns the entry, or nil when
    /// there was none.
    @discardableResult
    public func remove(_ id: TenantID) throws -> Tenant? {
        var removed: Tenant?
        try modify { tenants in
            removed = tenants.first { $0.id == id }
            tenants.removeAll { $0.id == id }
        }
        return removed
    }

    /// Puts back an entry `remove` returned (a removal that had to be undone), unless the
    /// name was taken meanwhile.
    public func reinstate(_ tenant: Tenant) throws {
        try modify { tenants in
            if !tenants.contains(where: { $0.id == tenant.id }) { tenants.append(tenant) }
        }
    }

    public func list() throws -> [Tenant] { try load() }

    public func contains(_ id: TenantID) throws -> Bool { try load().contains { $0.id == id } }

    // MARK: Tokens

    /// What a bearer token belongs to. Compares hashes in constant time.
    public func authenticate(token: String) throws -> Authentication {
        let presented = Array(Self.hash(token).utf8)
        var match: Tenant?
        for tenant in try load() {
            let stored = Array(tenant.tokenSHA256.utf8)
            guard stored.count == presented.count else { continue }
            var difference: UInt8 = 0
            for index in stored.indices { difference |= stored[index] ^ presented[index] }
            if difference == 0 { match = tenant }
        }
        guard let match else { return .unknown }
        if Self.isReserved(match.id) { return .reserved(match.id) }
        return .tenant(match.id, tokenSHA256: match.tokenSHA256)
    }

    /// The tenant a bearer token belongs to, or nil (a reserved name's token included).
    public func tenant(forToken token: String) throws -> TenantID? {
        if case .tenant(let id, _) = try authenticate(token: token) { return id }
        return nil
    }

    /// Whether the tenant that presented a token with this hash is still there, with that
    /// token: false once it was removed, also when a new tenant of the same name came since.
    public func isCurrent(_ id: TenantID, tokenSHA256: String) throws -> Bool {
        try load().contains { $0.id == id && $0.tokenSHA256 == tokenSHA256 }
    }

    static func makeToken() -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        var generator = SystemRandomNumberGenerator()
        for index in bytes.indices { bytes[index] = generator.next() }
        return "corral_"
            + Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func hash(_ token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    // MARK: The file

    private func modify(_ change: (inout [Tenant]) throws -> Void) throws {
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let descriptor = open(lockFile.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw CorralError(.io, "cannot open \(lockFile.path): \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        while flock(descriptor, LOCK_EX) != 0 {
            guard errno == EINTR else {
                throw CorralError(.io, "cannot lock \(lockFile.path): \(String(cString: strerror(errno)))")
            }
        }
        defer { flock(descriptor, LOCK_UN) }
        var tenants = try load()
        try change(&tenants)
        try save(tenants)
    }

    private func load() throws -> [Tenant] {
        guard let data = FileManager.default.contents(atPath: file.path) else { return [] }
        if let cached = cache.withLock({ $0.bytes == data ? $0.tenants : nil }) { return cached }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            let tenants = try decoder.decode([Tenant].self, from: data)
            cache.withLock { $0 = (data, tenants) }
            return tenants
        } catch {
            throw CorralError(
                .corrupted, "\(file.path) is not a valid tenants file", hint: "restore it from a backup",
                underlying: error)
        }
    }

    private func save(_ tenants: [Tenant]) throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(tenants)
        let temporary = file.appendingPathExtension("tmp")
        unlink(temporary.path)
        guard
            FileManager.default.createFile(
                atPath: temporary.path, contents: data, attributes: [.posixPermissions: 0o600])
        else {
            throw CorralError(.io, "cannot write \(temporary.path)")
        }
        let descriptor = open(temporary.path, O_RDONLY | O_CLOEXEC)
        if descriptor >= 0 {
            fsync(descriptor)
            close(descriptor)
        }
        guard rename(temporary.path, file.path) == 0 else {
            throw CorralError(.io, "cannot replace \(file.path): \(String(cString: strerror(errno)))")
        }
        let directory = open(file.deletingLastPathComponent().path, O_RDONLY | O_CLOEXEC)
        if directory >= 0 {
            fsync(directory)
            close(directory)
        }
    }
}
