import CorralCore
import DockerEngine
import Foundation
import TestSupport
import Testing

@testable import CorralSandbox

/// A state directory of the test's own (so its pools and records are its own instance), a
/// provisioner that knows the test's templates, and cleanup that removes every container of
/// that instance, checked by label.
final class PoolFixture: Sendable {
    let engine: DockerEngineClient
    let provisioner: Provisioner
    let stateDirectory: URL
    let clock: ManualClock

    init(templates: [SandboxTemplate], engine: DockerEngineClient? = nil, claimGrace: Duration = .seconds(60)) throws {
        stateDirectory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-pool-test-\(UUID().uuidString.prefix(8))", isDirectory: true)
        self.engine = try engine ?? DockerEngineClient(parsing: TestEnvironment.engineEndpoint)
        var configuration = Provisioner.Configuration(
            environment: SandboxEnvironment(
                initBinary: try SandboxEnvironment.locateInit(),
                sandboxesDirectory: stateDirectory.appendingPathComponent("sandboxes", isDirectory: true)),
            templates: templates)
        configuration.claimGrace = claimGrace
        provisioner = Provisioner(engine: self.engine, configuration: configuration)
        clock = ManualClock()
    }

    static func template(
        _ name: String = "t-\(UUID().uuidString.prefix(6).lowercased())", minIdle: Int = 2, maxTotal: Int = 20,
        configure: (inout SandboxTemplate) -> Void = { _ in }
    ) -> SandboxTemplate {
        var template = SandboxTemplate(name: TemplateName(unchecked: name), image: TestEnvironment.baseImage)
        template.resources.memory = .mebibytes(128)
        template.pool.minIdle = minIdle
        template.pool.maxTotal = maxTotal
        template.ttl = .seconds(900)
        configure(&template)
        return template
    }

    var timer: ServiceTimer {
        let clock = self.clock
        return ServiceTimer(clock: clock, now: { clock.date })
    }

    func pool(_ template: SandboxTemplate, configure: (inout WarmPool.Configuration) -> Void = { _ in }) -> WarmPool {
        var configuration = WarmPool.Configuration()
        configuration.timer = timer
        configuration.checkInterval = .seconds(5)
        configuration.backoff = Backoff(initial: .seconds(1), maximum: .seconds(8))
        configure(&configuration)
        return WarmPool(template: template, provisioner: provisioner, configuration: configuration)
    }

    func request(_ template: SandboxTemplate, _ configure: (inout ProvisionRequest) -> Void = { _ in })
        -> ProvisionRequest
    {
        var request = ProvisionRequest()
        request.template = template.name
        configure(&request)
        return request
    }

    /// Runs the pool's service loop while `body` runs, then stops it.
    func running<T: Sendable>(_ pool: WarmPool, _ body: () async throws -> T) async throws -> T {
        let task = Task { try await pool.run() }
        do {
            let value = try await body()
            task.cancel()
            _ = try? await task.value
            return value
        } catch {
            task.cancel()
            _ = try? await task.value
            throw error
        }
    }

    /// Waits until the pool's status satisfies `condition` (bounded, so a broken pool fails).
    @discardableResult
    func wait(_ pool: WarmPool, _ what: String, until condition: @escaping @Sendable (PoolStatus) -> Bool) async throws
        -> PoolStatus
    {
        try await withTimeout(.seconds(120), what) { try await pool.waitForStatus(condition) }
    }

    func idleMembers(_ template: SandboxTemplate) async throws -> Set<SandboxID> {
        Set(try await provisioner.poolMembers(template: template.name).filter { $0.state == .idle }.map(\.id))
    }

    /// Removes everything this instance made and checks, by label, that nothing is left.
    func cleanUp() async throws {
        let left = try await Provisioner.removeEverything(
            engine: engine, sandboxesDirectory: stateDirectory.appendingPathComponent("sandboxes", isDirectory: true))
        try? FileManager.default.removeItem(at: stateDirectory)
        #expect(left.isEmpty, "containers left behind: \(left)")
    }
}

/// Runs `body` with a fixture and always cleans up after it.
func withPoolFixture<T: Sendable>(
    templates: [SandboxTemplate], engine: DockerEngineClient? = nil, claimGrace: Duration = .seconds(60),
    _ body: (PoolFixture) async throws -> T
) async throws -> T {
    let fixture = try PoolFixture(templates: templates, engine: engine, claimGrace: claimGrace)
    do {
        let value = try await body(fixture)
        try await fixture.cleanUp()
        return value
    } catch {
        try? await fixture.cleanUp()
        throw error
    }
}
