import CorralAPI
import CorralCore
import CorralSandbox
import DockerEngine
import Foundation

extension EmbeddedBackend {
    // The library in this process: stdin, terminals, detach, attach, listing and signals need
    // the sandbox's control connection. No service holds it (or this process would go through
    // the service), so the library adopts the sandbox for them, with the key its maker kept,
    // and refuses them with an error that says why when it cannot.

    func interact(
        _ id: SandboxID, _ command: SandboxCommand, stdin: AsyncThrowingStream<[UInt8], any Error>?,
        terminal: TerminalSize?, resizes: AsyncStream<TerminalSize>?,
        output: (CommandOutputChunk) async throws -> Void
    ) async throws -> CommandStatus {
        let sandbox = provisioner.handle(id, tenant: tenant)
        let running = try await sandbox.start(command, stdin: stdin != nil, terminal: terminal)
        defer { running.detach() }
        return try await withThrowingTaskGroup(of: Void.self) { group in
            if let stdin {
                group.addTask {
                    for try await chunk in stdin { try await running.write(stdin: chunk) }
                    try await running.closeStdin()
                }
            }
            if let resizes {
                group.addTask {
                    for await size in resizes { try? await running.resize(size) }
                }
            }
            for try await chunk in running.output { try await output(chunk) }
            let status = try await running.wait()
            group.cancelAll()
            return status
        }
    }

    func startDetached(_ id: SandboxID, _ command: SandboxCommand, stdin: Bool, terminal: TerminalSize?)
        async throws -> CommandHandle
    {
        let running = try await provisioner.handle(id, tenant: tenant).start(
            command, stdin: stdin, terminal: terminal, detached: true)
        defer { running.detach() }
        return CommandHandle(running)
    }

    func attach(
        _ id: SandboxID, _ command: CommandID, from offset: Int64, attached: (CommandHandle) async throws -> Void,
        output: (CommandOutputChunk) async throws -> Void
    ) async throws -> CommandStatus {
        let running = try await provisioner.handle(id, tenant: tenant).attach(command, from: offset)
        defer { running.detach() }
        try await attached(CommandHandle(running))
        for try await chunk in running.output { try await output(chunk) }
        return try await running.wait()
    }

    func commands(_ id: SandboxID) async throws -> [CommandInfo] {
        try await provisioner.handle(id, tenant: tenant).commands()
    }

    func signal(_ id: SandboxID, _ command: CommandID, _ signal: CommandSignal) async throws {
        try await provisioner.handle(id, tenant: tenant).signal(id: command, signal)
    }
}

extension RemoteBackend {
    // A service: the command's stream on one request; stdin and resizes on requests of their
    // own, started once the stream names the command.

    func interact(
        _ id: SandboxID, _ command: SandboxCommand, stdin: AsyncThrowingStream<[UInt8], any Error>?,
        terminal: TerminalSize?, resizes: AsyncStream<TerminalSize>?,
        output: (CommandOutputChunk) async throws -> Void
    ) async throws -> CommandStatus {
        let client = self.client
        let request = StartCommandRequest(command, stdin: stdin != nil, terminal: terminal)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            let status = try await client.runCommand(
                id, request,
                started: { handle in
                    if let stdin {
                        group.addTask { try await client.writeStdin(id, handle.id, stdin) }
                    }
                    if let resizes {
                        group.addTask {
                            for await size in resizes { try? await client.resizeCommand(id, handle.id, to: size) }
                        }
                    }
                }, output: output)
            group.cancelAll()
            return status
        }
    }

    func startDetached(_ id: SandboxID, _ command: SandboxCommand, stdin: Bool, terminal: TerminalSize?)
        async throws -> CommandHandle
    {
        try await client.startDetached(id, StartCommandRequest(command, stdin: stdin, terminal: terminal))
    }

    func attach(
        _ id: SandboxID, _ command: CommandID, from offset: Int64, attached: (CommandHandle) async throws -> Void,
        output: (CommandOutputChunk) async throws -> Void
    ) async throws -> CommandStatus {
        try await client.attachCommand(id, command, from: offset, attached: attached, output: output)
    }

    func commands(_ id: SandboxID) async throws -> [CommandInfo] { try await client.commands(id) }

    func signal(_ id: SandboxID, _ command: CommandID, _ signal: CommandSignal) async throws {
        try await client.signalCommand(id, command, String(signal.number))
    }
}
