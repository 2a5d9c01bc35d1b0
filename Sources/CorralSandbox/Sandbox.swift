import CorralCore
import DockerEngine
import Foundation
import Logging

/// A handle on one sandbox. It holds no state the engine does not: a handle made from an id
/// works in any process, and a sandbox that vanished behind it gives tool errors that say so.
public final class Sandbox: Sendable {
    public let id: SandboxID
    public let tenant: TenantID
    /// The engine's name for the container, `corral.<tenant>.<id>`.
    public let containerName: String
    /// How it was made, when this handle made it.
    public let provisioning: ProvisionReport?
    let engine: DockerEngineClient
    let transport: any SandboxTransport
    let tools: [String: any SandboxTool]
    let configuration: ToolConfiguration
    let environment: SandboxEnvironment
    /// Where its record lives; nil when the provisioner keeps none.
    let records: SandboxRecordStore?
    /// The gateway its socket is attached to, closed on removal.
    let gateway: (any SandboxGateway)?
    /// Where its control connection is held, closed on removal.
    let control: ControlChannels?
    let logger: Logger

    init(
        id: SandboxID, tenant: TenantID, engine: DockerEngineClient, environment: SandboxEnvironment,
        records: SandboxRecordStore?, gateway: (any SandboxGateway)? = nil, control: ControlChannels? = nil,
        tools: [any SandboxTool],
        configuration: ToolConfiguration, provisioning: ProvisionReport?, logger: Logger
    ) {
        self.id = id
        self.tenant = tenant
        self.containerName = SandboxLabels.containerName(tenant: tenant, sandbox: id)
        self.engine = engine
        self.records = records
        self.gateway = gateway
        self.control = control
        self.transport = SandboxTransports.make(
            engine: engine, container: containerName, sandbox: id, environment: environment, records: records,
            control: control)
        self.tools = Dictionary(tools.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        self.configuration = configuration
        self.environment = environment
        self.provisioning = provisioning
        self.logger = logger
    }

    /// The tools this sandbox offers, by name.
    public var toolNames: [String] { tools.keys.sorted() }

    public func tool(named name: String) -> (any SandboxTool)? { tools[name] }

    /// execute(name, input): runs a tool and returns its output. Unknown tools, bad input,
    /// failed commands and a dead sandbox all come back as `isError` outputs; only
    /// cancellation is thrown.
    public func execute(tool name: String, input: JSONValue) async throws -> ToolOutput {
        guard let tool = tools[name] else {
            return .error("unknown tool '\(name)'; this sandbox offers: \(toolNames.joined(separator: ", "))")
        }
        do {
            let output = try await tool.run(input, in: self)
            logger.debug(
                "tool ran", metadata: ["sandbox": "\(id)", "tool": "\(name)", "error": "\(output.isError)"])
            return output
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as CorralError {
            if error.code == .cancelled { throw CancellationError() }
            return .error("\(name): \(error.description)")
        } catch {
            return .error("\(name): \(error)")
        }
    }

    /// Runs a command, handing output to `output` as it arrives.
    public func run(
        _ command: SandboxCommand, output: (StdioStream, [UInt8]) async throws -> Void
    ) async throws -> CommandStatus {
        try await transport.run(command, output: output)
    }

    /// Runs a command and collects its output (each stream capped at `limit` bytes).
    public func run(_ command: SandboxCommand, limit: Int = 1 << 20) async throws -> CommandResult {
        var stdout = OutputCapture(limit: limit)
        var stderr = OutputCapture(limit: limit)
        let status = try await transport.run(command) { stream, bytes in
            if stream == .stderr { stderr.append(bytes) } else { stdout.append(bytes) }
        }
        return CommandResult(
            status: status, stdout: stdout.text(streamName: "stdout"), stderr: stderr.text(streamName: "stderr"))
    }

    /// What the engine says about this sandbox now, with its record.
    public func info() async throws -> SandboxInfo {
        do {
            let inspect = try await engine.inspectContainer(containerName)
            guard
                let info = SandboxInfo(
                    inspect: inspect, record: try records?.read(id), lastActivity: records?.lastActivity(id))
            else {
                throw CorralError.notFound("sandbox \(id) not found")
            }
            return info
        } catch let error as DockerEngineError where error.isNotFound {
            throw CorralError.notFound("sandbox \(id) not found", hint: "list sandboxes with `corral sandbox ls`")
        }
    }

    /// Removes the sandbox, its workspace volume and everything in it, and closes its gateway
    /// socket.
    public func remove() async throws {
        let removed = try await engine.removeContainer(containerName, force: true, volumes: true)
        gateway?.detach(sandbox: id)
        control?.close(id)
        environment.removeHostDirectory(for: id)
        if !removed {
            throw CorralError.notFound("sandbox \(id) not found", hint: "list sandboxes with `corral sandbox ls`")
        }
        logger.info("sandbox removed", metadata: ["sandbox": "\(id)"])
    }
}

/// A finished command's collected output.
public struct CommandResult: Sendable, Hashable {
    public var status: CommandStatus
    public var stdout: String
    public var stderr: String
}

/// How `provision` made a sandbox: which path, and how long each phase took.
public struct ProvisionReport: Sendable, Hashable, Codable {
    public enum Path: String, Sendable, Codable {
        /// Claimed from a warm pool.
        case warm
        /// Created and started on demand.
        case cold
    }

    public var path: Path
    /// Phase name to milliseconds: `claim` (warm) or `create` (cold), `start`, `setup` (the
    /// template's setup; 0 on the warm path, where it ran when the member was made),
    /// `workspace` (attaching the gateway and cloning the repository) and `ready` (writing
    /// the per-session record).
    public var phases: [String: Double]
    public var totalMilliseconds: Double
}
