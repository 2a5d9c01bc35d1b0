import ArgumentParser

struct SessionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "session",
        abstract: "Durable, append-only session logs.",
        discussion: """
            Sessions live in <state-dir>/sessions. Seqs start at 1; a session's head is its last seq (0 when \
            empty). --expect-seq names the seq the first appended event must get (head + 1).

            When a corral service answers (--server URL or CORRAL_SERVER with CORRAL_TOKEN, or `corral serve` on \
            this state directory), the commands go through it and see the sessions of its tenant; they print \
            the same either way.
            """,
        subcommands: [
            SessionCreateCommand.self,
            SessionAppendCommand.self,
            SessionListCommand.self,
            SessionShowCommand.self,
            SessionTailCommand.self,
            SessionWakeCommand.self,
            SessionForkCommand.self,
        ]
    )
}
