import CorralCore
import CorralSandbox
import Foundation

/// What corral keeps for a sandbox E2B's API made or connected to, beside its record in the
/// sandbox's host directory (0700, root's, never mounted into the sandbox): the envd access
/// token the data plane checks, and the template id the client asked for.
package struct E2BSandboxFile: Codable, Sendable, Hashable {
    package static let name = "e2b.json"

    package var accessToken: String
    package var templateID: String

    /// 32 random bytes, hex: what `X-Access-Token` must carry for this sandbox.
    package static func newToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }

    package static func url(_ store: SandboxRecordStore, _ id: SandboxID) -> URL {
        store.sandboxDirectory(id).appendingPathComponent(name)
    }

    package static func read(_ store: SandboxRecordStore, _ id: SandboxID) -> E2BSandboxFile? {
        guard let data = FileManager.default.contents(atPath: url(store, id).path) else { return nil }
        return try? JSONDecoder().decode(E2BSandboxFile.self, from: data)
    }

    package func write(_ store: SandboxRecordStore, _ id: SandboxID) throws {
        let target = Self.url(store, id)
        let temporary = target.path + ".tmp"
        let data = try JSONEncoder().encode(self)
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600])
        else {
            throw CorralError(.io, "cannot write the E2B state of sandbox \(id)")
        }
        guard rename(temporary, target.path) == 0 else {
            unlink(temporary)
            throw CorralError(.io, "cannot write the E2B state of sandbox \(id)")
        }
    }

    /// The file, made with a new token when the sandbox has none yet (one corral's own API made).
    package static func readOrMake(_ store: SandboxRecordStore, _ id: SandboxID, template: String) throws
        -> E2BSandboxFile
    {
        if let file = read(store, id) { return file }
        let file = E2BSandboxFile(accessToken: newToken(), templateID: template)
        try file.write(store, id)
        return file
    }

    /// Compares in time independent of where the first difference is.
    package func accepts(_ presented: String) -> Bool {
        let expected = Array(accessToken.utf8)
        let given = Array(presented.utf8)
        guard expected.count == given.count else { return false }
        var difference: UInt8 = 0
        for index in expected.indices { difference |= expected[index] ^ given[index] }
        return difference == 0
    }
}
