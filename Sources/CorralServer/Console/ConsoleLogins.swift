import Crypto
import Foundation
import Synchronization

/// The console's logins: a browser that presented a valid token gets a random login id in an
/// HttpOnly, SameSite=Strict cookie, and the token itself is never stored, echoed or put in
/// a cookie. Logins live in memory only (a restarted corrald asks everyone to log in again)
/// and are kept by the SHA-256 of their id, so the table holds nothing a browser could
/// present.
///
/// A login ends when it is older than `lifetime`, unused for `idleTimeout`, logged out, or
/// when the token it was made with stops working (the tenant removed, the operator token
/// replaced): every request checks that, through `isCurrent`.
final class ConsoleLogins: Sendable {
    struct Login: Sendable, Hashable {
        var viewer: ConsoleViewer
        /// The SHA-256 of the token presented at login, to check it still works.
        var credentialSHA256: String
        /// Forms of this login carry it; a POST without it is refused.
        var csrf: String
        var created: Date
        var lastSeen: Date
    }

    struct Configuration: Sendable {
        var lifetime: Duration = .seconds(12 * 3600)
        var idleTimeout: Duration = .seconds(2 * 3600)
        /// Most logins held at once; the oldest goes first.
        var maxLogins = 10_000
    }

    let configuration: Configuration
    private let logins = Mutex<[String: Login]>([:])

    init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// A new login; returns the id for the cookie.
    func open(viewer: ConsoleViewer, credentialSHA256: String, now: Date = Date()) -> (id: String, login: Login) {
        let id = Self.randomToken()
        let login = Login(
            viewer: viewer, credentialSHA256: credentialSHA256, csrf: Self.randomToken(), created: now, lastSeen: now)
        logins.withLock { table in
            table[Self.key(id)] = login
            if table.count > configuration.maxLogins {
                let oldest = table.sorted { $0.value.lastSeen < $1.value.lastSeen }
                    .prefix(table.count - configuration.maxLogins)
                for (key, _) in oldest { table[key] = nil }
            }
        }
        return (id, login)
    }

    /// The login a cookie names, unless it expired (then it is forgotten).
    func find(_ id: String, now: Date = Date()) -> Login? {
        let key = Self.key(id)
        return logins.withLock { table -> Login? in
            guard var login = table[key] else { return nil }
            let age = now.timeIntervalSince(login.created)
            let idle = now.timeIntervalSince(login.lastSeen)
            guard age < configuration.lifetime.seconds, idle < configuration.idleTimeout.seconds else {
                table[key] = nil
                return nil
            }
            login.lastSeen = now
            table[key] = login
            return login
        }
    }

    func close(_ id: String) {
        _ = logins.withLock { $0.removeValue(forKey: Self.key(id)) }
    }

    var count: Int { logins.withLock { $0.count } }

    static func key(_ id: String) -> String {
        SHA256.hash(data: Data(id.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// 32 random bytes, base64url without padding.
    static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: 32)
        for index in bytes.indices { bytes[index] = generator.next() }
        return Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Compares two strings in time that depends on their length only.
    static func constantTimeEqual(_ lhs: String, _ rhs: String) -> Bool {
        let left = Array(lhs.utf8)
        let right = Array(rhs.utf8)
        guard left.count == right.count else { return false }
        var difference: UInt8 = 0
        for index in left.indices { difference |= left[index] ^ right[index] }
        return difference == 0
    }
}

extension Duration {
    var seconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}
