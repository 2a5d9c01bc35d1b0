import CorralCore

/// What an agent session is: which brain, within which limits, on which hands. Recorded in
/// the session's `session.created` event, so that a harness woken in another process runs
/// the session the way it was started.
public struct AgentSpec: Sendable, Hashable {
    public var brain: BrainSpec
    public var limits: Limits
    /// Largest context sent to the brain, in estimated tokens (four bytes of JSON a token).
    /// Over it, the context is compacted.
    public var contextBudget: Int
    /// The system prompt; nil for corral's default.
    public var system: String?
    /// How the session's sandboxes are made.
    public var hands: HandSpec

    public init(
        brain: BrainSpec, limits: Limits = Limits(), contextBudget: Int = AgentSpec.defaultContextBudget,
        system: String? = nil, hands: HandSpec = HandSpec()
    ) {
        self.brain = brain
        self.limits = limits
        self.contextBudget = contextBudget
        self.system = system
        self.hands = hands
    }

    public static let defaultContextBudget = 120_000
    /// Below this a context cannot hold a task, a summary and a turn.
    public static let minimumContextBudget = 4_000

    /// When the agent stops on its own. Counted per task: from the latest user message.
    public struct Limits: Sendable, Hashable {
        /// Brain calls.
        public var maxTurns: Int = 50
        /// Input plus output tokens, as the brain reports them.
        public var maxTokens: Int?
        /// Wall time since the task's user message.
        public var maxWallTime: Duration?

        public init(maxTurns: Int = 50, maxTokens: Int? = nil, maxWallTime: Duration? = nil) {
            self.maxTurns = maxTurns
            self.maxTokens = maxTokens
            self.maxWallTime = maxWallTime
        }
    }

    public func validated() throws -> AgentSpec {
        guard limits.maxTurns >= 1 else {
            throw CorralError.invalidArgument("max turns must be at least 1, got \(limits.maxTurns)")
        }
        if let tokens = limits.maxTokens, tokens < 1 {
            throw CorralError.invalidArgument("max tokens must be positive, got \(tokens)")
        }
        if let wall = limits.maxWallTime, wall <= .zero {
            throw CorralError.invalidArgument("max wall time must be positive")
        }
        guard contextBudget >= Self.minimumContextBudget else {
            throw CorralError.invalidArgument(
                "a context budget of \(contextBudget) tokens is too small",
                hint: "give at least \(Self.minimumContextBudget) tokens")
        }
        return self
    }
}

/// Which brain a session uses: a provider and a model. Keys are never part of it.
public struct BrainSpec: Sendable, Hashable {
    public enum Provider: String, Sendable, Hashable, CaseIterable {
        case anthropic
        case openai
        case scripted
    }

    public var provider: Provider
    public var model: String
    /// For the scripted brain: the script file.
    public var script: String?

    public init(provider: Provider, model: String, script: String? = nil) {
        self.provider = provider
        self.model = model
        self.script = script
    }

    public static let defaultAnthropicModel = "claude-sonnet-4-5"
    public static let defaultOpenAIModel = "gpt-4.1"

    /// Parses `anthropic`, `openai` or `scripted:FILE`, with the model or its default.
    public init(parsing text: String, model: String?) throws {
        if text.hasPrefix("scripted:") {
            let path = String(text.dropFirst("scripted:".count))
            guard !path.isEmpty else {
                throw CorralError.invalidArgument(
                    "--brain scripted: needs a file", hint: "use --brain scripted:path/to/script.jsonl")
            }
            self.init(provider: .scripted, model: model ?? "scripted", script: path)
            return
        }
        switch text {
        case "anthropic": self.init(provider: .anthropic, model: model ?? Self.defaultAnthropicModel)
        case "openai": self.init(provider: .openai, model: model ?? Self.defaultOpenAIModel)
        default:
            throw CorralError.invalidArgument(
                "unknown brain '\(text)'", hint: "use --brain anthropic, --brain openai or --brain scripted:FILE")
        }
    }

    public var description: String {
        provider == .scripted ? "scripted:\(script ?? "?")" : "\(provider.rawValue) \(model)"
    }
}

/// How a session's sandboxes are made: passed through to the hand provisioner.
public struct HandSpec: Sendable, Hashable {
    /// A sandbox template by name (warm pools bring templates).
    public var template: String?
    /// A repository to check out into each sandbox's workspace (the gateway brings these).
    public var repo: String?

    public init(template: String? = nil, repo: String? = nil) {
        self.template = template
        self.repo = repo
    }
}

// MARK: JSON, as stored in session.created

extension AgentSpec {
    var jsonValue: JSONValue {
        var brain: [String: JSONValue] = [
            "provider": .string(self.brain.provider.rawValue), "model": .string(self.brain.model),
        ]
        if let script = self.brain.script { brain["script"] = .string(script) }
        var limits: [String: JSONValue] = ["maxTurns": .int(Int64(self.limits.maxTurns))]
        if let tokens = self.limits.maxTokens { limits["maxTokens"] = .int(Int64(tokens)) }
        if let wall = self.limits.maxWallTime { limits["maxWallSeconds"] = .double(wall.milliseconds / 1000) }
        var hands: [String: JSONValue] = [:]
        if let template = self.hands.template { hands["template"] = .string(template) }
        if let repo = self.hands.repo { hands["repo"] = .string(repo) }
        var value: [String: JSONValue] = [
            "brain": .object(brain), "limits": .object(limits), "contextBudget": .int(Int64(contextBudget)),
            "hands": .object(hands),
        ]
        if let system { value["system"] = .string(system) }
        return .object(value)
    }

    init?(json value: JSONValue) {
        guard let providerText = value["brain"]?["provider"]?.stringValue,
            let provider = BrainSpec.Provider(rawValue: providerText),
            let model = value["brain"]?["model"]?.stringValue
        else { return nil }
        let brain = BrainSpec(provider: provider, model: model, script: value["brain"]?["script"]?.stringValue)
        var limits = Limits()
        if let turns = value["limits"]?["maxTurns"]?.intValue { limits.maxTurns = Int(turns) }
        limits.maxTokens = value["limits"]?["maxTokens"]?.intValue.map { Int($0) }
        limits.maxWallTime = value["limits"]?["maxWallSeconds"]?.doubleValue.map { .milliseconds(Int64($0 * 1000)) }
        self.init(
            brain: brain, limits: limits,
            contextBudget: value["contextBudget"]?.intValue.map { Int($0) } ?? Self.defaultContextBudget,
            system: value["system"]?.stringValue,
            hands: HandSpec(
                template: value["hands"]?["template"]?.stringValue, repo: value["hands"]?["repo"]?.stringValue))
    }
}
