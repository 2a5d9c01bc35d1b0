import ArgumentParser
import CorralCore
import CorralGateway
import CorralHarness
import CorralSandbox
import CorralService
import CorralSession
import Foundation

/// Options `agent run` and `agent wake` share: which brain, and how to print.
struct AgentBrainOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "anthropic, openai, or scripted:FILE (default: anthropic when its key is set or in the vault).",
            valueName: "BRAIN"))
    var brain: String?

    @Option(help: ArgumentHelp("The model (default claude-sonnet-4-5 or gpt-4.1).", valueName: "M"))
    var model: String?

    @Option(
        name: .customLong("brain-timeout"),
        help: ArgumentHelp("Longest wait for one brain answer.", valueName: "DURATION"))
    var brainTimeout: String?

    @Flag(help: "Print each event as a JSON line instead of readable steps.")
    var json = false

    /// The brain to use: `--brain`, else `recorded` (the session's own), else Anthropic when
    /// its key is set or stored in the vault.
    func spec(recorded: BrainSpec?, credentials: EnvironmentCredentials) async throws -> BrainSpec {
        if let brain {
            var spec = try BrainSpec(parsing: brain, model: model)
            if let script = spec.script {
                // Recorded absolute, so that a wake from another directory finds it.
                spec.script = URL(fileURLWithPath: script).standardizedFileURL.path
            }
            return spec
        }
        if var recorded {
            if let model { recorded.model = model }
            return recorded
        }
        guard try await credentials.apiKey(for: .anthropic) != nil else {
            throw CorralError(
                .invalidArgument, "no brain chosen, and ANTHROPIC_API_KEY is not set",
                hint:
                    "export ANTHROPIC_API_KEY (or `corral vault put anthropic --scope api.anthropic.com`), "
                    + "or pass --brain openai (with OPENAI_API_KEY) or --brain scripted:FILE")
        }
        return BrainSpec(provider: .anthropic, model: model ?? BrainSpec.defaultAnthropicModel)
    }

    /// The brain as `POST /v1/agents` names it: `--brain` (a script's path made absolute, for
    /// the service reads it on its machine), else Anthropic, whose key the service holds.
    func remoteBrain() throws -> String {
        guard let brain else { return BrainSpec.Provider.anthropic.rawValue }
        let spec = try BrainSpec(parsing: brain, model: model)
        guard let script = spec.script else { return brain }
        return "scripted:" + URL(fileURLWithPath: script).standardizedFileURL.path
    }

    /// Options that only a harness in this process can honour.
    func refuseLocalOnlyOptions() throws {
        if brainTimeout != nil {
            throw CorralError.invalidArgument(
                "--brain-timeout cannot be set through a corral service",
                hint: "leave it out: the service's own applies")
        }
    }

    func makeBrain(_ spec: BrainSpec, credentials: EnvironmentCredentials) async throws -> any Brain {
        let timeout = try brainTimeout.map { try Duration(parsing: $0) }
        return try await BrainFactory.make(spec, credentials: credentials, timeout: timeout)
    }
}

extension GlobalOptions {
    /// Brain keys from the environment, else from the vault beside `store` (the harness's)
    /// when there is one (no vault is made, and no key file, just to look).
    func brainCredentials(store: any SessionStore) -> EnvironmentCredentials {
        // Opened only when the environment lacks the key: a vault whose key is missing must
        // not stand in the way of a key that is set.
        let configuration = Vault.Configuration(stateDirectory: stateDirectory, environment: environment)
        return EnvironmentCredentials(
            environment: environment,
            storedKey: { host in
                try await Vault.existing(
                    configuration: configuration, storage: SessionStoreSelection.vaultStorage(store)
                )?.brainKey(host: host)
            })
    }

    /// The harness on this machine's session store and engine. The engine is reached only
    /// when a tool first needs a sandbox.
    func harness(image: String? = nil) async throws -> Harness {
        var configuration = SandboxHands.Configuration()
        if let image { configuration.image = image }
        let global = self
        let hands = SandboxHands(configuration: configuration) {
            let context = CommandContext(global)
            return try context.provisioner(configuration: try context.configuration(explicit: nil))
        }
        return Harness(store: try await sessionStore(), hands: hands)
    }
}

/// Runs the harness, printing each step as it is recorded.
enum AgentRunner {
    static func run(harness: Harness, session: SessionID, brain: any Brain, message: String?, json: Bool) async throws {
        let printer = StepPrinter(json: json)
        let outcome = try await harness.run(session, brain: brain, message: message) { event in printer.print(event) }
        if !outcome.resumed {
            FileHandle.standardError.write(
                Data(
                    "corral: session \(session) has ended (\(outcome.reason)); nothing to do. Pass --message to continue it.\n"
                        .utf8))
        }
    }
}
