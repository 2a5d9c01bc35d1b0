import CorralBench

// Called from an async function so that AsyncParsableCommand's async `main()` is chosen;
// at top level the synchronous one wins, and refuses to run an async command.
func runBench() async { await BenchCommand.main() }
await runBench()
