import CorralCore
import CorralHost
import CorralService
import Crypto
import Foundation
import Synchronization

/// The operator's token for the console over TCP. The operator is the local tenant, reached
/// only on `$STATE/corral.sock`, which a browser cannot open; `corral tenant add` makes
/// tenants, never the operator. So the operator asks the service for a console token on the
/// unix socket (`POST /console/operator-token`, root only, as the socket is 0600) and logs in
/// with it in the browser. The token opens the console as the operator and nothing else: the
/// `/v1` API on TCP does not take it.
///
/// There is one at a time: making a new one replaces the old one (and ends the logins made
/// with it), and `DELETE /console/operator-token` revokes it. Only its SHA-256 is kept, in
/// `$STATE/console-operator.json` (0600), so that it survives a restart; without a state
/// directory (tests) it is kept in memory.
final class OperatorConsoleToken: Sendable {
    struct Stored: Codable, Sendable, Hashable {
        var tokenSHA256: String
        var created: Date
    }

    let file: URL?
    private let memory = Mutex<Stored?>(nil)

    init(stateDirectory: String?) {
        file = stateDirectory.map { URL(fileURLWithPath: $0).appendingPathComponent("console-operator.json") }
    }

    /// Makes a new token (`corral_operator_` and 43 base64url characters), replacing any
    /// earlier one, and returns it: it is shown once.
    func mint(now: Date = Date()) throws -> String {
        let token = "corral_operator_" + ConsoleLogins.randomToken()
        try store(Stored(tokenSHA256: BearerToken.hash(token), created: now))
        return token
    }

    /// Revokes the token; false when there was none.
    @discardableResult
    func revoke() throws -> Bool {
        let had = try load() != nil
        try store(nil)
        return had
    }

    /// The token's hash when `token` is the operator's token.
    func authenticate(_ token: String) throws -> String? {
        guard let stored = try load() else { return nil }
        let presented = BearerToken.hash(token)
        return ConsoleLogins.constantTimeEqual(stored.tokenSHA256, presented) ? presented : nil
    }

    /// Whether a token with this hash is still the operator's.
    func isCurrent(_ tokenSHA256: String) -> Bool {
        guard let stored = try? load() else { return false }
        return ConsoleLogins.constantTimeEqual(stored.tokenSHA256, tokenSHA256)
    }

    func load() throws -> Stored? {
        guard let file else { return memory.withLock { $0 } }
        guard let data = FileManager.default.contents(atPath: file.path) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(Stored.self, from: data)
        } catch {
            throw CorralError(
                .corrupted, "\(file.path) is not a valid console token file",
                hint: "remove it and make a new token: POST /console/operator-token on the unix socket")
        }
    }

    private func store(_ stored: Stored?) throws {
        guard let file else {
            memory.withLock { $0 = stored }
            return
        }
        guard let stored else {
            if unlink(file.path) != 0 && errno != ENOENT {
                throw CorralError(.io, "cannot remove \(file.path): \(String(cString: strerror(errno)))")
            }
            return
        }
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(stored)
        let temporary = file.appendingPathExtension("tmp")
        unlink(temporary.path)
        guard
            FileManager.default.createFile(
                atPath: temporary.path, contents: data, attributes: [.posixPermissions: 0o600])
        else {
            throw CorralError(.io, "cannot write \(temporary.path)")
        }
        guard rename(temporary.path, file.path) == 0 else {
            throw CorralError(.io, "cannot replace \(file.path): \(String(cString: strerror(errno)))")
        }
    }
}
