import ArgumentParser
import CorralAPI
import CorralCore
import CorralHarness
import Foundation

struct AgentRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Start an agent on a task: prints the session id first, then each step as it happens.",
        discussion: """
            Sandboxes are made when the brain first calls a tool that needs one. Everything is recorded in the \
            session (corral session show ID); a run cut short continues with corral agent wake ID.

            Through a corral service (--server URL or CORRAL_SERVER with CORRAL_TOKEN, or `corral serve` on this \
            state directory) the run happens in the service, with the brain keys of the service's environment: \
            this command only follows it. Ctrl-C stops following, not the run; `corral agent stop ID` stops it, \
            and `corral session tail ID` follows it again. A script (--brain scripted:FILE) is read on the \
            service's machine, and only the local tenant may use one.
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var brainOptions: AgentBrainOptions

    @Option(help: ArgumentHelp("Sandbox template from corral.toml (claimed from its warm pool).", valueName: "T"))
    var template: String?

    @Option(
        help: ArgumentHelp(
            "Repository to clone into /workspace through the gateway (needs corral serve).", valueName: "URL"))
    var repo: String?

    @Option(help: ArgumentHelp("Sandbox image.", valueName: "REF"))
    var image: String?

    @Option(name: .customLong("max-turns"), help: ArgumentHelp("Brain calls before the agent stops.", valueName: "N"))
    var maxTurns = 50

    @Option(
        name: .customLong("max-tokens"),
        help: ArgumentHelp("Brain tokens (input + output) before the agent stops.", valueName: "N"))
    var maxTokens: Int?

    @Option(
        name: .customLong("max-time"),
        help: ArgumentHelp("Wall time before the agent stops, such as 30m.", valueName: "DURATION"))
    var maxTime: String?

    @Option(
        name: .customLong("context-budget"),
        help: ArgumentHelp(
            "Largest context sent to the brain, in tokens; over it the context is compacted.", valueName: "N"))
    var contextBudget = AgentSpec.defaultContextBudget

    @Option(help: ArgumentHelp("System prompt (default: corral's).", valueName: "TEXT"))
    var system: String?

    @Argument(help: "What the agent should do.")
    var task: String

    func run() async throws {
        if let client = try await CommandContext(global).serviceClient() {
            defer { client.shutdown() }
            try await RemoteAgentRun(client: client, printer: StepPrinter(json: brainOptions.json)).start(
                try remoteRequest())
            return
        }
        let harness = try await global.harness(image: image)
        let credentials = global.brainCredentials(store: harness.store)
        let brainSpec = try await brainOptions.spec(recorded: nil, credentials: credentials)
        let brain = try await brainOptions.makeBrain(brainSpec, credentials: credentials)
        let limits = AgentSpec.Limits(
            maxTurns: maxTurns, maxTokens: maxTokens, maxWallTime: try maxTime.map { try Duration(parsing: $0) })
        let spec = AgentSpec(
            brain: brainSpec, limits: limits, contextBudget: contextBudget, system: system,
            hands: HandSpec(template: template, repo: repo))
        let session = try await harness.create(task: task, spec: spec)
        var out = StandardOutput()
        out.line(session.rawValue)
        out.flush()
        try await AgentRunner.run(
            harness: harness, session: session, brain: brain, message: nil, json: brainOptions.json)
    }

    /// The run as the service takes it. Keys never leave this machine: the service's own
    /// environment supplies them.
    func remoteRequest() throws -> StartAgentRequest {
        if repo != nil {
            throw CorralError(
                .unsupported, "repository workspaces are not available in this build",
                hint: "--repo comes with the gateway; leave it out, or clone inside the sandbox once egress exists")
        }
        if image != nil {
            throw CorralError.invalidArgument(
                "--image cannot be chosen through a corral service",
                hint: "pass --template T, a template of the service's corral.toml")
        }
        try brainOptions.refuseLocalOnlyOptions()
        var request = StartAgentRequest(task: task, brain: try brainOptions.remoteBrain())
        request.model = brainOptions.model
        request.template = template
        request.maxTurns = maxTurns
        request.maxTokens = maxTokens
        request.maxTime = try maxTime.map { DurationValue(try Duration(parsing: $0)) }
        request.contextBudget = contextBudget
        request.system = system
        return request
    }
}
