import ArgumentParser

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run an agent: a brain that works in sandboxes, every step recorded in a session.",
        discussion: """
            The brain is Anthropic's Messages API (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL), an OpenAI-compatible \
            chat API (OPENAI_API_KEY, OPENAI_BASE_URL), or a script (--brain scripted:FILE). A harness can be \
            killed at any moment: `corral agent wake SESSION` continues where the log ends.

            When a corral service answers (--server URL or CORRAL_SERVER with CORRAL_TOKEN, or `corral serve` on \
            this state directory), runs happen in the service with its keys; these commands start, follow and \
            stop them, and Ctrl-C only stops following.
            """,
        subcommands: [AgentRunCommand.self, AgentWakeCommand.self, AgentStopCommand.self]
    )
}
