import CorralCLI

await CorralCommand.runAndExit()
