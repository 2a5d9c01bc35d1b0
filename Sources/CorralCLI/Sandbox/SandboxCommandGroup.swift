import ArgumentParser

struct SandboxCommandGroup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract: "Create, list, inspect and remove sandboxes.",
        subcommands: [SandboxCreate.self, SandboxList.self, SandboxInspect.self, SandboxRemove.self]
    )
}
