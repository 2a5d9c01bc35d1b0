import CorralCore
import Foundation

/// Where brain API keys come from. Today the environment; the vault plugs in here, so that
/// neither a sandbox nor an event ever holds a key.
public protocol BrainCredentials: Sendable {
    /// The key for `provider`, or nil when there is none.
    func apiKey(for provider: BrainSpec.Provider) async throws -> String?
}

/// Keys and endpoints from `ANTHROPIC_API_KEY`/`ANTHROPIC_BASE_URL` and
/// `OPENAI_API_KEY`/`OPENAI_BASE_URL`; a key the environment does not hold comes from
/// `storedKey`, which looks it up by the API's host (the vault, scope `api.anthropic.com`,
/// among the local tenant's credentials only: brain keys are the operator's, never a tenant's).
public struct EnvironmentCredentials: BrainCredentials {
    public let environment: [String: String]
    /// The key stored for an API host (`host` or `host:port`), or nil.
    public let storedKey: (@Sendable (_ host: String) async throws -> String?)?

    public init(
        environment: [String: String], storedKey: (@Sendable (_ host: String) async throws -> String?)? = nil
    ) {
        self.environment = environment
        self.storedKey = storedKey
    }

    public func apiKey(for provider: BrainSpec.Provider) async throws -> String? {
        let name: String
        switch provider {
        case .anthropic: name = "ANTHROPIC_API_KEY"
        case .openai: name = "OPENAI_API_KEY"
        case .scripted: return nil
        }
        if let key = environment[name], !key.isEmpty { return key }
        guard let storedKey, let host = apiHost(for: provider) else { return nil }
        guard let key = try await storedKey(host), !key.isEmpty else { return nil }
        return key
    }

    public func baseURL(for provider: BrainSpec.Provider) -> String? {
        switch provider {
        case .anthropic: environment["ANTHROPIC_BASE_URL"].flatMap { $0.isEmpty ? nil : $0 }
        case .openai: environment["OPENAI_BASE_URL"].flatMap { $0.isEmpty ? nil : $0 }
        case .scripted: nil
        }
    }

    /// The host (with its port, when the URL names one) that `provider`'s requests go to:
    /// the scope under which the vault keeps its key.
    public func apiHost(for provider: BrainSpec.Provider) -> String? {
        let base: String
        switch provider {
        case .anthropic: base = baseURL(for: provider) ?? AnthropicBrain.Configuration().baseURL
        case .openai: base = baseURL(for: provider) ?? OpenAIBrain.Configuration().baseURL
        case .scripted: return nil
        }
        guard let components = URLComponents(string: base), let host = components.host, !host.isEmpty else {
            return nil
        }
        return (components.port.map { "\(host):\($0)" } ?? host).lowercased()
    }
}

/// Removes a secret from text that may have echoed it (an error body, an exception).
enum Redaction {
    static func redact(_ text: String, secret: String?) -> String {
        guard let secret, secret.count >= 4 else { return text }
        return text.replacingOccurrences(of: secret, with: "[redacted]")
    }

    /// One line, at most `limit` characters, so that a body dump does not flood an event.
    static func oneLine(_ text: String, limit: Int = 500) -> String {
        let flattened = text.split(whereSeparator: \.isNewline).joined(separator: " ").trimmingCharacters(
            in: .whitespaces)
        return flattened.count > limit ? String(flattened.prefix(limit)) + "…" : flattened
    }
}
