import CorralBench

await BenchCommand.main()
