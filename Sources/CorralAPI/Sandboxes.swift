import CorralCore
import CorralSandbox
import DockerEngine
import Foundation

/// `POST /v1/sandboxes`.
public struct CreateSandboxRequest: Codable, Sendable, Hashable {
    /// A template from the service's corral.toml; fixes image, runtime and limits.
    public var template: String?
    public var image: String?
    public var runtime: String?
    public var memory: ByteSize?
    public var cpus: Double?
    public var pids: Int?
    /// Size of /workspace; 0 (no limit) is the local tenant's only.
    public var disk: ByteSize?
    public var ttl: DurationValue?
    public var idleTTL: DurationValue?
    public var labels: [String: String]?
    public var env: [String: String]?
    public var session: String?
    /// A repository cloned into /workspace through the gateway.
    public var workspace: SandboxWorkspace?
    /// Hosts the sandbox may reach through its gateway.
    public var egressHosts: [String]?

    public init() {}

    /// The wire form of a request built by the command line.
    public init(_ request: ProvisionRequest) {
        template = request.template?.rawValue
        if request.template == nil {
            image = request.image
            runtime = request.runtime.rawValue
            memory = request.resources.memory
            cpus = request.resources.cpus
            pids = request.resources.pids
            disk = request.resources.disk
        }
        ttl = request.ttl.map(DurationValue.init)
        idleTTL = request.idleTTL.map(DurationValue.init)
        labels = request.labels.isEmpty ? nil : request.labels
        env = request.env.isEmpty ? nil : request.env
        session = request.session?.rawValue
        workspace = request.workspace
        egressHosts = request.egressHosts.isEmpty ? nil : request.egressHosts
    }

    /// The library's request, checked; `tenant` comes from the caller's credentials, never
    /// from the body.
    public func provisionRequest(tenant: TenantID) throws -> ProvisionRequest {
        var request = ProvisionRequest(image: image ?? ProvisionRequest.defaultImage)
        if let template {
            let shaping: [(String, Bool)] = [
                ("image", image != nil), ("runtime", runtime != nil), ("memory", memory != nil), ("cpus", cpus != nil),
                ("pids", pids != nil), ("disk", disk != nil),
            ]
            if let (field, _) = shaping.first(where: { $0.1 }) {
                throw CorralError.invalidArgument(
                    "\(field) cannot be combined with a template: the template fixes the image, runtime and limits",
                    hint: "leave out \(field), or change the template")
            }
            request.template = try TemplateName(validating: template)
        }
        if let runtime { request.runtime = try SandboxRuntime(parsing: runtime) }
        if let memory { request.resources.memory = memory }
        if let cpus { request.resources.cpus = cpus }
        if let pids { request.resources.pids = pids }
        if let disk { request.resources.disk = disk }
        request.ttl = ttl?.duration
        request.idleTTL = idleTTL?.duration
        request.labels = labels ?? [:]
        request.env = env ?? [:]
        request.tenant = tenant
        if let session { request.session = try SessionID(validating: session) }
        request.workspace = workspace
        request.egressHosts = egressHosts ?? []
        return request
    }
}

/// What `POST /v1/sandboxes` (and `corral sandbox create --json`) returns.
public struct CreatedSandbox: Codable, Sendable, Hashable {
    public var id: SandboxID
    /// `warm` (claimed from a pool) or `cold` (made on demand).
    public var path: String
    /// Phase to milliseconds: claim or create, start, workspace, ready.
    public var phases: [String: Double]
    public var totalMilliseconds: Double

    public init(sandbox: Sandbox) {
        id = sandbox.id
        path = sandbox.provisioning?.path.rawValue ?? "cold"
        phases = sandbox.provisioning?.phases ?? [:]
        totalMilliseconds = sandbox.provisioning?.totalMilliseconds ?? 0
    }
}

/// `POST /v1/sandboxes/{id}/execute`: execute(name, input).
public struct ExecuteRequest: Codable, Sendable, Hashable {
    public var name: String
    public var input: JSONValue

    public init(name: String, input: JSONValue) {
        self.name = name
        self.input = input
    }
}

/// `POST /v1/sandboxes/{id}/exec`: a command whose output streams back as NDJSON lines of
/// `ExecStreamEvent`.
public struct ExecRequest: Codable, Sendable, Hashable {
    public var command: [String]
    public var env: [String: String]?
    public var workdir: String?
    public var timeout: DurationValue?

    public init(_ command: SandboxCommand) {
        self.command = command.arguments
        env = command.environment.isEmpty ? nil : command.environment
        workdir = command.workingDirectory
        timeout = command.timeout.map(DurationValue.init)
    }

    public func sandboxCommand() throws -> SandboxCommand {
        guard !command.isEmpty else { throw CorralError.invalidArgument("command is empty") }
        if let workdir, !workdir.hasPrefix("/") {
            throw CorralError.invalidArgument("workdir must be an absolute path, got '\(workdir)'")
        }
        if let timeout, timeout.duration <= .zero { throw CorralError.invalidArgument("timeout must be longer than 0") }
        return SandboxCommand(command, environment: env ?? [:], workingDirectory: workdir, timeout: timeout?.duration)
    }
}

/// One line of an exec stream: output as it arrives (base64, since it may not be text), then
/// how the command ended, or an error.
public struct ExecStreamEvent: Codable, Sendable, Hashable {
    public var stream: String?
    public var data: String?
    public var status: CommandStatus?
    public var error: APIErrorBody?

    public static func output(_ stream: StdioStream, _ bytes: [UInt8]) -> ExecStreamEvent {
        ExecStreamEvent(stream: stream == .stderr ? "stderr" : "stdout", data: Data(bytes).base64EncodedString())
    }

    public static func finished(_ status: CommandStatus) -> ExecStreamEvent { ExecStreamEvent(status: status) }

    public static func failed(_ error: CorralError) -> ExecStreamEvent { ExecStreamEvent(error: APIErrorBody(error)) }

    public var bytes: [UInt8] { data.flatMap { Data(base64Encoded: $0) }.map { [UInt8]($0) } ?? [] }
    public var stdioStream: StdioStream { stream == "stderr" ? .stderr : .stdout }
}

/// `GET /v1/health`.
public struct HealthStatus: Codable, Sendable, Hashable {
    public var status: String
    public var engine: String
    public var version: String

    public init(status: String, engine: String, version: String) {
        self.status = status
        self.engine = engine
        self.version = version
    }
}
