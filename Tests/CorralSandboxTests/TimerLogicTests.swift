import CorralCore
import DockerEngine
import Foundation
import TestSupport
import Testing

@testable import CorralSandbox

@Suite("Timer logic on a manual clock (no engine)")
struct TimerLogicTests {
    @Test("backoff doubles from its start and stops at its maximum")
    func backoffDelays() {
        let backoff = Backoff(initial: .seconds(1), maximum: .seconds(8))
        #expect(
            (1...6).map(backoff.delay(afterFailures:)) == [
                .seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(8), .seconds(8),
            ])
        #expect(backoff.delay(afterFailures: 0) == .zero)
        #expect(backoff.delay(afterFailures: 10_000) == .seconds(8))
    }

    @Test("a pool whose engine is out retries exactly when its backoff says, never sooner")
    func poolBackoffSchedule() async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-timer-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: state) }
        let engine = try DockerEngineClient(parsing: "unix://\(state.path)/no-engine.sock")
        var template = SandboxTemplate(name: TemplateName(unchecked: "timer"))
        template.pool.minIdle = 1
        let provisioner = Provisioner(
            engine: engine,
            configuration: .init(
                environment: SandboxEnvironment(
                    initBinary: "/bin/true", sandboxesDirectory: state.appendingPathComponent("sandboxes")),
                templates: [template]))
        let clock = ManualClock()
        var configuration = WarmPool.Configuration()
        configuration.timer = ServiceTimer(clock: clock, now: { clock.date })
        configuration.backoff = Backoff(initial: .seconds(1), maximum: .seconds(4))
        let pool = WarmPool(template: template, provisioner: provisioner, configuration: configuration)
        let run = Task { try await pool.run() }
        defer { run.cancel() }
        for (failures, wait) in [(1, Duration.seconds(1)), (2, .seconds(2)), (3, .seconds(4)), (4, .seconds(4))] {
            let status = try await withTimeout(.seconds(30), "failure \(failures)") {
                try await pool.waitForStatus { $0.consecutiveFailures == failures }
            }
            #expect(status.state == .degraded)
            #expect(status.lastError?.contains("cannot connect") == true)
            try await clock.waitForSleepers()
            #expect(clock.requestedSleeps.last == wait)
            clock.advance(by: wait - .milliseconds(1))
            #expect(await pool.currentStatus().passes == failures, "no pass before the backoff ends")
            clock.advance(by: .milliseconds(1))
        }
        run.cancel()
        _ = try? await run.value
        #expect(await pool.currentStatus().state == .stopped)
        #expect(provisioner.metrics.snapshot().refillFailures >= 4)
    }

    @Test("the reaper sweeps once per interval on its clock")
    func reaperInterval() async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-timer-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: state) }
        let engine = try DockerEngineClient(parsing: "unix://\(state.path)/no-engine.sock")
        let provisioner = Provisioner(
            engine: engine,
            configuration: .init(
                environment: SandboxEnvironment(
                    initBinary: "/bin/true", sandboxesDirectory: state.appendingPathComponent("sandboxes"))))
        let clock = ManualClock()
        var configuration = SandboxReaper.Configuration()
        configuration.timer = ServiceTimer(clock: clock, now: { clock.date })
        configuration.interval = .seconds(30)
        let reaper = SandboxReaper(provisioner: provisioner, configuration: configuration)
        let run = Task { try await reaper.run() }
        for sweep in 1...3 {
            try await clock.waitForSleepers()
            #expect(clock.requestedSleeps.count == sweep)
            clock.advance(by: .seconds(30))
        }
        #expect(clock.requestedSleeps.allSatisfy { $0 == .seconds(30) })
        run.cancel()
        _ = try? await run.value
    }

    @Test("member and sandbox names parse back; others are not corral's")
    func names() throws {
        let id = SandboxID.random()
        let template = TemplateName(unchecked: "base")
        #expect(
            SandboxLabels.classify(containerName: SandboxLabels.memberName(template: template, sandbox: id))
                == .member(template, id))
        #expect(
            SandboxLabels.classify(containerName: SandboxLabels.preparingName(template: template, sandbox: id))
                == .preparing(template, id))
        #expect(SandboxLabels.classify(containerName: "corral.acme.\(id)") == .sandbox(TenantID(unchecked: "acme"), id))
        #expect(SandboxLabels.classify(containerName: "corral-pool.Bad.\(id)") == nil)
        #expect(SandboxLabels.classify(containerName: "other.acme.\(id)") == nil)
    }

    @Test("records round-trip atomically; the claim marker admits exactly one taker")
    func records() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-records-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = SandboxRecordStore(directory: directory)
        let id = SandboxID.random()
        let record = SandboxRecord(
            id: id, tenant: .local, session: .random(), template: TemplateName(unchecked: "base"), path: .warm,
            created: Date(timeIntervalSince1970: 1_700_000_000), bound: Date(timeIntervalSince1970: 1_700_000_100),
            expires: nil, idleTTL: .seconds(90), env: ["A": "1"], labels: ["k": "v"])
        try store.write(record)
        #expect(try store.read(id) == record)
        #expect(try store.read(SandboxID.random()) == nil)
        #expect(store.takeClaim(id))
        #expect(!store.takeClaim(id))
        #expect(store.claimOwner(id).flatMap(ProcessIdentity.isAlive) == true)
        try Data("{not json".utf8).write(to: store.sandboxDirectory(id).appendingPathComponent("record.json"))
        #expect(throws: CorralError.self) { try store.read(id) }
        let instance = try store.instanceID()
        #expect(try store.instanceID() == instance)
    }

    @Test("template checks refuse what cannot work, naming the template")
    func templateValidation() throws {
        var template = SandboxTemplate(name: TemplateName(unchecked: "small"))
        template.pool.minIdle = 5
        template.pool.maxTotal = 2
        #expect(throws: CorralError.self) { try template.validated() }
        do {
            _ = try template.validated()
        } catch let error as CorralError {
            #expect(error.message == "template 'small': pool max_total (2) is below min_idle (5)")
        }
        template.pool.maxTotal = 5
        template.resources.memory = .mebibytes(1)
        #expect(throws: CorralError.self) { try template.validated() }
        var a = SandboxTemplate(name: TemplateName(unchecked: "a"))
        let b = a
        #expect(a.fingerprint(imageID: "sha256:1") == b.fingerprint(imageID: "sha256:1"))
        #expect(a.fingerprint(imageID: "sha256:1") != a.fingerprint(imageID: "sha256:2"))
        a.setup = ["true"]
        #expect(a.fingerprint(imageID: "sha256:1") != b.fingerprint(imageID: "sha256:1"))
        a = b
        a.pool.minIdle = 9
        #expect(
            a.fingerprint(imageID: "sha256:1") == b.fingerprint(imageID: "sha256:1"),
            "pool sizes do not recycle members")
    }
}
