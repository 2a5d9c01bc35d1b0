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
                throw CorralError(
                    .invalidArgument, "no Anthropic API key: ANTHROPIC_API_KEY is not set",
                    hint:
                        "export ANTHROPIC_API_KEY, or pass --brain openai (with OPENAI_API_KEY) or --brain scripted:FILE"
                )
            }
            var configuration = AnthropicBrain.Configuration()
            configuration.model = spec.model
            if let base = credentials.baseURL(for: .anthropic) { configuration.baseURL = base }
            if let timeout { configuration.timeout = timeout }
            return try AnthropicBrain(configuration: configuration, apiKey: key, logger: logger)
        case .openai:
            guard let key = try await credentials.apiKey(for: .openai) else {
                throw CorralError(
                    .invalidArgument, "no OpenAI API key: OPENAI_API_KEY is not set",
                    hint: "export OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server), or pass another --brain"
                )
            }
            var configuration = OpenAIBrain.Configuration()
            configuration.model = spec.model
            if let base = credentials.baseURL(for: .openai) { configuration.baseURL = base }
            if let timeout { configuration.timeout = timeout }
            return try OpenAIBrain(configuration: configuration, apiKey: key, logger: logger)
        }
    }
}
