import CorralBench

await BenchCommand.runAndExit()
