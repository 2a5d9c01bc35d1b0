// corrald: the corral service. `corrald [options]` is `corral serve [options]`.
import CorralCLI

await CorralCommand.runAndExit(arguments: ["serve"] + Array(CommandLine.arguments.dropFirst()))
