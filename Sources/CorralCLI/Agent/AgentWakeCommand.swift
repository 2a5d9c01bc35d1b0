import ArgumentParser
import CorralCore
import CorralHarness
import Foundation

struct AgentWakeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wake",
        abstract: "Continue an agent session where its log ends, in a new harness with a new lease.",
        discussion: """
            A tool call that was cut short runs again when it only reads; otherwise the brain is told its outcome is \
            unknown. The session's own brain is used unless --brain says otherwise.

            Through a corral service the run happens in the service, with the session's own brain and the \
            service's keys: this command only follows it from the session's head. Ctrl-C stops following, not \
            the run; `corral agent stop ID` stops it.
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var brainOptions: AgentBrainOptions

    @Option(
        help: ArgumentHelp("A new user message to continue with (also restarts an ended session).", valueName: "TEXT"))
    var message: String?

    @Option(help: ArgumentHelp("Sandbox image for sandboxes made from now on.", valueName: "REF"))
    var image: String?

    @Argument(help: "Session id.")
    var id: String

    func run() async throws {
        let session = try SessionID(validating: id)
        if let client = try await CommandContext(global).serviceClient() {
            defer { client.shutdown() }
            if image != nil {
                throw CorralError.invalidArgument(
                    "--image cannot be chosen through a corral service",
                    hint: "leave it out: the service uses the session's template")
            }
            if brainOptions.brain != nil || brainOptions.model != nil {
                throw CorralError.invalidArgument(
                    "--brain and --model cannot be changed through a corral service: it resumes a session with its own brain",
                    hint: "leave them out")
            }
            try brainOptions.refuseLocalOnlyOptions()
            try await RemoteAgentRun(client: client, printer: StepPrinter(json: brainOptions.json)).wake(
                session, message: message)
            return
        }
        let harness = try await global.harness(image: image)
        let recorded = try await harness.recordedSpec(session)
        // A script path recorded in a network tenant's session came from that tenant (it can
        // write the session's first event): never read it as this user; --brain must say.
        if recorded?.brain.provider == .scripted, brainOptions.brain == nil,
            try await harness.store.session(session).tenant != .local
        {
            throw CorralError.invalidArgument(
                "session \(session) is a network tenant's: its recorded scripted brain is not used",
                hint: "pass --brain to choose the brain for this wake")
        }
        let credentials = global.brainCredentials(store: harness.store)
        let brainSpec = try await brainOptions.spec(recorded: recorded?.brain, credentials: credentials)
        let brain = try await brainOptions.makeBrain(brainSpec, credentials: credentials)
        var out = StandardOutput()
        out.line(session.rawValue)
        out.flush()
        try await AgentRunner.run(
            harness: harness, session: session, brain: brain, message: message, json: brainOptions.json)
    }
}
