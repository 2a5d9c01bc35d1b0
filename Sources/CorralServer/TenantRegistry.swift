import CorralCore
import Crypto
import Foundation
import Synchronization

/// Tenants and their bearer tokens, kept in `$STATE/tenants.json`. Only a token's SHA-256 is
/// stored: the token itself is printed once, when the tenant is added, and never again.
public final class TenantRegistry: Sendable {
    public struct Tenant: Codable, Sendable, Hashable {
        public var id: TenantID
        public var tokenSHA256: String
        public var created: Date
    }

    public let file: URL
    private let cache = Mutex<(loaded: Date?, tenants: [Tenant])>((nil, []))

    public init(stateDirectory: URL) {
        file = stateDirectory.appendingPathComponent("tenants.json")
    }

    /// Adds a tenant and returns its token (`corral_` and 43 base64url characters).
    public func add(_ id: TenantID) throws -> String {
        var tenants = try load()
        guard !tenants.contains(where: { $0.id == id }) else {
            throw CorralError(
                .alreadyExists, "tenant '\(id)' exists already", hint: "pick another name, or remove it first")
        }
        var bytes = [UInt8](repeating: 0, count: 32)
        var generator = SystemRandomNumberGenerator()
        for index in bytes.indices { bytes[index] = generator.next() }
        let token =
            "corral_"
            + Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        tenants.append(Tenant(id: id, tokenSHA256: Self.hash(token), created: Date()))
        try save(tenants)
        return token
    }

    public func remove(_ id: TenantID) throws {
        var tenants = try load()
        guard tenants.contains(where: { $0.id == id }) else { throw CorralError.notFound("no tenant '\(id)'") }
        tenants.removeAll { $0.id == id }
        try save(tenants)
    }

    public func list() throws -> [Tenant] { try load() }

    /// The tenant a bearer token belongs to, or nil. Compares hashes in constant time.
    public func tenant(forToken token: String) throws -> TenantID? {
        let presented = Array(Self.hash(token).utf8)
        var match: TenantID?
        for tenant in try load() {
            let stored = Array(tenant.tokenSHA256.utf8)
            guard stored.count == presented.count else { continue }
            var difference: UInt8 = 0
            for index in stored.indices { difference |= stored[index] ^ presented[index] }
            if difference == 0 { match = tenant.id }
        }
        return match
    }

    static func hash(_ token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// Reads the file when it changed since the last read (`corral tenant add` may run while
    /// the service does).
    private func load() throws -> [Tenant] {
        let modified = (try? FileManager.default.attributesOfItem(atPath: file.path)[.modificationDate]) as? Date
        if let cached = cache.withLock({ $0.loaded == modified && modified != nil ? $0.tenants : nil }) {
            return cached
        }
        guard let modified, let data = FileManager.default.contents(atPath: file.path) else { return [] }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            let tenants = try decoder.decode([Tenant].self, from: data)
            cache.withLock { $0 = (modified, tenants) }
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
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let temporary = file.appendingPathExtension("tmp")
        guard
            FileManager.default.createFile(
                atPath: temporary.path, contents: data, attributes: [.posixPermissions: 0o600])
        else {
            throw CorralError(.io, "cannot write \(temporary.path)")
        }
        let descriptor = open(temporary.path, O_RDONLY)
        if descriptor >= 0 {
            fsync(descriptor)
            close(descriptor)
        }
        guard rename(temporary.path, file.path) == 0 else {
            throw CorralError(.io, "cannot replace \(file.path): \(String(cString: strerror(errno)))")
        }
        let directory = open(file.deletingLastPathComponent().path, O_RDONLY)
        if directory >= 0 {
            fsync(directory)
            close(directory)
        }
        cache.withLock { $0 = (nil, []) }
    }
}
