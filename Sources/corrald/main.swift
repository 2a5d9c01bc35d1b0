// corrald: the corral service. `corrald [options]` is `corral serve [options]`;
// `corrald worker [options]` is `corral worker [options]`.
import CorralCLI

let arguments = Array(CommandLine.arguments.dropFirst())
await CorralCommand.runAndExit(arguments: arguments.first == "worker" ? arguments : ["serve"] + arguments)
