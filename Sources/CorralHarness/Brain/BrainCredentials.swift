import CorralCore

/// Where brain API keys come from. Today the environment; the vault plugs in here, so that
/// neither a sandbox nor an event ever holds a key.
public protocol BrainCredentials: Sendable {
    /// The key for `provider`, or nil when there is none.
    func apiKey(for provider: BrainSpec.Provider) async throws -> String?
}

/// Keys and endpoints from `ANTHROPIC_API_KEY`/`ANTHROPIC_BASE_URL` and
/// `OPENAI_API_KEY`/`OPENAI_BASE_URL`.
public struct EnvironmentCredentials: BrainCredentials {
    public let environment: [String: String]

    public init(environment: [String: String]) {
        self.environment = environment
    }

    public func apiKey(for provider: BrainSpec.Provider) async throws -> String? {
        let name: String
        switch provider {
        case .anthropic: name = "ANTHROPIC_API_KEY"
        case .openai: name = "OPENAI_API_KEY"
        case .scripted: return nil
        }
        guard let key = environment[name], !key.isEmpty else { return nil }
        return key
    }

    public func baseURL(for provider: BrainSpec.Provider) -> String? {
        switch provider {
        case .anthropic: environment["ANTHROPIC_BASE_URL"].flatMap { $0.isEmpty ? nil : $0 }
        case .openai: environment["OPENAI_BASE_URL"].flatMap { $0.isEmpty ? nil : $0 }
        case .scripted: nil
        }
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
