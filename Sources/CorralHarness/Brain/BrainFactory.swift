import CorralCore
import Logging

/// Makes the brain a spec names, with its key and endpoint from `credentials`.
public enum BrainFactory {
    public static func make(
        _ spec: BrainSpec, credentials: EnvironmentCredentials, timeout: Duration? = nil, logger: Logger? = nil
    ) async throws -> any Brain {
        switch spec.provider {
        case .scripted:
            guard let script = spec.script else {
                throw CorralError.invalidArgument("the scripted brain needs a file", hint: "use --brain scripted:FILE")
            }
            return try ScriptedBrain(contentsOf: script)
        case .anthropic:
            guard let key = try await credentials.apiKey(for: .anthropic) else {
                throw missingKey(.anthropic, "Anthropic", variable: "ANTHROPIC_API_KEY", credentials: credentials)
            }
            var configuration = AnthropicBrain.Configuration()
            configuration.model = spec.model
            if let base = credentials.baseURL(for: .anthropic) { configuration.baseURL = base }
            if let timeout { configuration.timeout = timeout }
            return try AnthropicBrain(configuration: configuration, apiKey: key, logger: logger)
        case .openai:
            guard let key = try await credentials.apiKey(for: .openai) else {
                throw missingKey(.openai, "OpenAI", variable: "OPENAI_API_KEY", credentials: credentials)
            }
            var configuration = OpenAIBrain.Configuration()
            configuration.model = spec.model
            if let base = credentials.baseURL(for: .openai) { configuration.baseURL = base }
            if let timeout { configuration.timeout = timeout }
            return try OpenAIBrain(configuration: configuration, apiKey: key, logger: logger)
        }
    }

    static func missingKey(
        _ provider: BrainSpec.Provider, _ name: String, variable: String, credentials: EnvironmentCredentials
    ) -> CorralError {
        let host = credentials.apiHost(for: provider) ?? "HOST"
        let vault = credentials.storedKey == nil ? "" : " and the vault holds none for \(host)"
        return CorralError(
            .invalidArgument, "no \(name) API key: \(variable) is not set\(vault)",
            hint: "export \(variable), or store it with `corral vault put \(provider.rawValue) --scope \(host)`, "
                + "or pass another --brain (scripted:FILE needs no key)")
    }
}
