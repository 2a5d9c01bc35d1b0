import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import Logging
import TestSupport
import Testing

/// How commands reach the sandbox: corral-init's control connection, or the engine's exec
/// (what a process that did not make the sandbox uses).
enum CommandPath: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case control, engine
    var testDescription: String { rawValue }
}

/// A provisioner on the test engine, and sandboxes that are removed whatever the test does.
struct EngineFixture {
    let engine: DockerEngineClient
    let provisioner: Provisioner
    let path: CommandPath

    init(tools: ToolConfiguration = ToolConfiguration(), path: CommandPath = .control, logger: Logger? = nil) throws {
        self.path = path
        engine = try DockerEngineClient(parsing: TestEnvironment.engineEndpoint)
        // Records and the instance id live in a state directory of the sandbox tests' own.
        let sandboxes = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-sandbox-tests/sandboxes", isDirectory: true)
        var configuration = Provisioner.Configuration(
            environment: SandboxEnvironment(
                initBinary: try SandboxEnvironment.locateInit(), sandboxesDirectory: sandboxes))
        configuration.tools = tools
        configuration.controlConnections = path == .control
        provisioner = Provisioner(engine: engine, configuration: configuration, logger: logger)
    }

    static func request(_ configure: (inout ProvisionRequest) -> Void = { _ in }) -> ProvisionRequest {
        var request = ProvisionRequest(image: TestEnvironment.baseImage)
        request.labels["test"] = "corral-sandbox-tests"
        request.ttl = .seconds(900)
        request.resources.memory = .mebibytes(256)
        configure(&request)
        return request
    }

    /// Provisions a sandbox, runs `body`, and removes the sandbox afterwards.
    func withSandbox<T>(
        _ request: ProvisionRequest = EngineFixture.request(), _ body: (Sandbox) async throws -> T
    ) async throws -> T {
        let sandbox = try await provisioner.provision(request)
        // The path under test must be the one taken.
        #expect(provisioner.control?.isConnected(sandbox.id) == (path == .control ? true : nil))
        do {
            let value = try await body(sandbox)
            try? await sandbox.remove()
            return value
        } catch {
            try? await sandbox.remove()
            throw error
        }
    }

    func bash(_ sandbox: Sandbox, _ command: String, timeout: Double? = nil, extra: [String: JSONValue] = [:])
        async throws
        -> ToolOutput
    {
        var input: [String: JSONValue] = ["command": .string(command)]
        if let timeout { input["timeout"] = .double(timeout) }
        input.merge(extra) { _, new in new }
        return try await sandbox.execute(tool: "bash", input: .object(input))
    }
}
