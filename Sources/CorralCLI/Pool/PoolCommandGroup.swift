import ArgumentParser

struct PoolCommandGroup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool",
        abstract: "Inspect and empty warm pools.",
        subcommands: [PoolList.self, PoolDrain.self]
    )
}
