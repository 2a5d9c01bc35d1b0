import CorralCLI

CorralCommand.answerAtOnce(Array(CommandLine.arguments.dropFirst()))
await CorralCommand.runAndExit()
