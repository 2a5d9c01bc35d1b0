import CorralAPI
import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import TarArchive

/// Where a sandbox command is carried out: in this process, straight on the engine
/// (embedded), or by a running corral service over HTTP. Commands are written against this
/// seam only, so each one behaves the same either way.
protocol SandboxBackend: Sendable {
    func create(_ request: ProvisionRequest) async throws -> CreatedSandbox
    func list() async throws -> [SandboxInfo]
    func info(_ id: SandboxID) async throws -> SandboxInfo
    func remove(_ id: SandboxID) async throws
    func execute(_ id: SandboxID, tool: String, input: JSONValue) async throws -> ToolOutput
    func run(
        _ id: SandboxID, _ command: SandboxCommand, output: (StdioStream, [UInt8]) async throws -> Void
    ) async throws -> CommandStatus
    func copyIn(_ id: SandboxID, from source: URL, to path: String) async throws
    func copyIn(_ id: SandboxID, tar pull: @escaping @Sendable () throws -> [UInt8]?, to directory: String) async throws
    func copyOut(_ id: SandboxID, _ path: String, to destination: URL) async throws
    func copyOut(_ id: SandboxID, _ path: String, tarChunks: ([UInt8]) async throws -> Void) async throws
    func pools() async throws -> [PoolStatus]
    func shutdown()

    // Commands that run on (see SandboxBackend+Commands.swift).

    /// Runs `command` for as long as this call, with `stdin` fed to it (EOF at its end), on a
    /// terminal of `terminal`'s size resized by `resizes`; `started` gets its handle.
    func interact(
        _ id: SandboxID, _ command: SandboxCommand, stdin: AsyncThrowingStream<[UInt8], any Error>?,
        terminal: TerminalSize?, resizes: AsyncStream<TerminalSize>?,
        output: (CommandOutputChunk) async throws -> Void
    ) async throws -> CommandStatus
    func startDetached(_ id: SandboxID, _ command: SandboxCommand, stdin: Bool, terminal: TerminalSize?)
        async throws -> CommandHandle
    func attach(
        _ id: SandboxID, _ command: CommandID, from offset: Int64, attached: (CommandHandle) async throws -> Void,
        output: (CommandOutputChunk) async throws -> Void
    ) async throws -> CommandStatus
    func commands(_ id: SandboxID) async throws -> [CommandInfo]
    func signal(_ id: SandboxID, _ command: CommandID, _ signal: CommandSignal) async throws
}

/// The library, in this process.
struct EmbeddedBackend: SandboxBackend {
    let provisioner: Provisioner
    let tenant: TenantID = .local

    func create(_ request: ProvisionRequest) async throws -> CreatedSandbox {
        CreatedSandbox(sandbox: try await provisioner.provision(request))
    }

    func list() async throws -> [SandboxInfo] { try await provisioner.list(tenant: tenant) }

    func info(_ id: SandboxID) async throws -> SandboxInfo { try await provisioner.handle(id, tenant: tenant).info() }

    func remove(_ id: SandboxID) async throws { try await provisioner.remove(id, tenant: tenant) }

    func execute(_ id: SandboxID, tool: String, input: JSONValue) async throws -> ToolOutput {
        try await provisioner.handle(id, tenant: tenant).execute(tool: tool, input: input)
    }

    func run(
        _ id: SandboxID, _ command: SandboxCommand, output: (StdioStream, [UInt8]) async throws -> Void
    ) async throws -> CommandStatus {
        try await provisioner.handle(id, tenant: tenant).run(command, output: output)
    }

    func copyIn(_ id: SandboxID, from source: URL, to path: String) async throws {
        try await provisioner.handle(id, tenant: tenant).copyIn(from: source, to: path)
    }

    func copyIn(_ id: SandboxID, tar pull: @escaping @Sendable () throws -> [UInt8]?, to directory: String) async throws
    {
        try await provisioner.handle(id, tenant: tenant).copyIn(tar: pull, to: directory)
    }

    func copyOut(_ id: SandboxID, _ path: String, to destination: URL) async throws {
        try await provisioner.handle(id, tenant: tenant).copyOut(path, to: destination)
    }

    func copyOut(_ id: SandboxID, _ path: String, tarChunks: ([UInt8]) async throws -> Void) async throws {
        try await provisioner.handle(id, tenant: tenant).copyOut(path, tarChunks: tarChunks)
    }

    func pools() async throws -> [PoolStatus] {
        throw CorralError(.unavailable, "no corral service answers", hint: "start one with `corral serve`")
    }

    func shutdown() { provisioner.engine.shutdown() }
}

/// A corral service, over HTTP.
struct RemoteBackend: SandboxBackend {
    let client: CorralClient

    func create(_ request: ProvisionRequest) async throws -> CreatedSandbox {
        try await client.createSandbox(CreateSandboxRequest(request))
    }

    func list() async throws -> [SandboxInfo] { try await client.listSandboxes() }

    func info(_ id: SandboxID) async throws -> SandboxInfo { try await client.sandbox(id) }

    func remove(_ id: SandboxID) async throws { try await client.removeSandbox(id) }

    func execute(_ id: SandboxID, tool: String, input: JSONValue) async throws -> ToolOutput {
        try await client.execute(id, tool: tool, input: input)
    }

    func run(
        _ id: SandboxID, _ command: SandboxCommand, output: (StdioStream, [UInt8]) async throws -> Void
    ) async throws -> CommandStatus {
        try await client.exec(id, command, output: output)
    }

    func copyIn(_ id: SandboxID, from source: URL, to path: String) async throws {
        let path = try Sandbox.checkedPath(path)
        let (directory, name): (String, String)
        if let existing = try await client.stat(id, path: path), existing.isDirectory {
            (directory, name) = (path, source.lastPathComponent)
        } else {
            (directory, name) = Sandbox.split(path)
        }
        // The service checks every entry again on its side.
        try await HostArchive.stream(source, as: name, ownership: TarOwnership(uid: 1000, gid: 1000)) { tar in
            try await client.putArchive(id, directory: directory, tar: tar)
        }
    }

    func copyIn(_ id: SandboxID, tar pull: @escaping @Sendable () throws -> [UInt8]?, to directory: String) async throws
    {
        let channel = ByteChannel()
        let reader = Task {
            try await runOnThread(name: "corral-stdin") {
                do {
                    while let chunk = try pull() { try channel.blockingSend(chunk) }
                    channel.finish()
                } catch {
                    channel.finish(throwing: error)
                    throw error
                }
            }
        }
        defer { channel.cancel() }
        try await client.putArchive(id, directory: try Sandbox.checkedPath(directory), tar: channel.asyncStream())
        _ = try? await reader.value
    }

    func copyOut(_ id: SandboxID, _ path: String, to destination: URL) async throws {
        let path = try Sandbox.checkedPath(path)
        try await HostArchive.extract(to: destination) { channel in
            try await client.getArchive(id, path: path) { try await channel.send($0) }
        }
    }

    func copyOut(_ id: SandboxID, _ path: String, tarChunks: ([UInt8]) async throws -> Void) async throws {
        try await client.getArchive(id, path: try Sandbox.checkedPath(path), chunk: tarChunks)
    }

    func pools() async throws -> [PoolStatus] { try await client.pools() }

    func shutdown() { client.shutdown() }
}
