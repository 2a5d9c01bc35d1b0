import CorralCore
import Foundation

/// A credential's value. It prints, dumps and reflects as `<redacted>`; only the gateway
/// reads it, to build the header it sends upstream.
public struct VaultSecret: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    let value: String

    public init(_ value: String) {
        self.value = value
    }

    public var isEmpty: Bool { value.isEmpty }
    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// A credential as the vault lists it: everything but the value.
public struct VaultEntry: Sendable, Hashable, Codable {
    public var name: String
    /// The tenant whose sandboxes may use it; no other tenant's ever does.
    public var tenant: TenantID
    public var scope: CredentialScope
    /// The user name sent with the token (Basic auth); `x-access-token` unless given.
    public var username: String
    public var created: Date

    public init(name: String, tenant: TenantID = .local, scope: CredentialScope, username: String, created: Date) {
        self.name = name
        self.tenant = tenant
        self.scope = scope
        self.username = username
        self.created = created
    }
}

/// The credential chosen for a repository, value included. Its description is redacted.
public struct ResolvedCredential: Sendable, CustomStringConvertible {
    public var entry: VaultEntry
    public var secret: VaultSecret

    public var description: String { "credential \(entry.name) for \(entry.scope)" }

    /// `Basic base64(user:token)`.
    var authorizationHeader: String {
        "Basic " + Data("\(entry.username):\(secret.value)".utf8).base64EncodedString()
    }

    /// Every spelling of the secret that could end up in text: the value and the header.
    var redactions: [String] { [secret.value, Data("\(entry.username):\(secret.value)".utf8).base64EncodedString()] }
}
