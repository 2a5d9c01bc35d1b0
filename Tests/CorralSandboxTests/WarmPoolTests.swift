import CorralCore
import DockerEngine
import Foundation
import TestSupport
import Testing

@testable import CorralSandbox

@Suite("Warm pools on a real engine", .engine)
struct WarmPoolTests {
    @Test("concurrent claims from many tasks never share a member, and the pool refills after them")
    func concurrentClaims() async throws {
        let template = PoolFixture.template(minIdle: 4)
        try await withPoolFixture(templates: [template]) { fixture in
            let pool = fixture.pool(template)
            try await fixture.running(pool) {
                try await fixture.wait(pool, "4 idle members") { $0.idle == 4 }
                let members = try await fixture.idleMembers(template)
                #expect(members.count == 4)
                let provisioner = fixture.provisioner
                let request = fixture.request(template)
                let sandboxes = try await withThrowingTaskGroup(of: Sandbox.self) { group in
                    for _ in 0..<7 { group.addTask { try await provisioner.provision(request) } }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                let ids = sandboxes.map(\.id)
                #expect(Set(ids).count == 7, "every claimer got its own sandbox")
                let warm = sandboxes.filter { $0.provisioning?.path == .warm }
                #expect(warm.count == 4, "each idle member went to exactly one claimer")
                #expect(Set(warm.map(\.id)) == members)
                for sandbox in sandboxes {
                    let info = try await sandbox.info()
                    #expect(info.state == "running")
                    #expect(info.template == template.name)
                }
                // The claims woke the pool: it refills to min_idle without the clock moving.
                try await fixture.wait(pool, "the pool refilled") { $0.idle == 4 && $0.preparing == 0 }
                let refilled = try await fixture.idleMembers(template)
                #expect(refilled.isDisjoint(with: Set(ids)))
                #expect(fixture.provisioner.metrics.snapshot().warmProvisions == 4)
                #expect(fixture.provisioner.metrics.snapshot().coldProvisions == 3)
            }
        }
    }

    @Test("claimers of different tenants racing through the engine (no pool in process) never share a member")
    func crossTenantClaims() async throws {
        // The engine's rename alone lets two claimers that rename one member to different
        // names both succeed; the claim marker must make exactly one of them win.
        let template = PoolFixture.template(minIdle: 3)
        try await withPoolFixture(templates: [template]) { fixture in
            await WarmPool(template: template, provisioner: fixture.provisioner).reconcile()
            let members = try await fixture.idleMembers(template)
            #expect(members.count == 3)
            let provisioner = fixture.provisioner
            let requests = (0..<8).map { index in
                fixture.request(template) { $0.tenant = TenantID(unchecked: "tenant\(index)") }
            }
            let sandboxes = try await withThrowingTaskGroup(of: Sandbox.self) { group in
                for request in requests { group.addTask { try await provisioner.provision(request) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(sandboxes.map(\.id)).count == 8)
            let warm = sandboxes.filter { $0.provisioning?.path == .warm }
            #expect(Set(warm.map(\.id)) == members, "each member went to exactly one tenant")
            for sandbox in sandboxes {
                // Found under its own tenant's name, with its own record.
                let info = try await sandbox.info()
                #expect(info.tenant == sandbox.tenant)
                #expect(try provisioner.records().read(sandbox.id)?.tenant == sandbox.tenant)
            }
        }
    }

    @Test("a member killed behind the pool's back is replaced at the next pass")
    func killedMemberReplaced() async throws {
        let template = PoolFixture.template(minIdle: 2)
        try await withPoolFixture(templates: [template]) { fixture in
            let pool = fixture.pool(template)
            try await fixture.running(pool) {
                try await fixture.wait(pool, "2 idle") { $0.idle == 2 }
                let victim = try #require(try await fixture.idleMembers(template).first)
                let name = SandboxLabels.memberName(template: template.name, sandbox: victim)
                try await fixture.engine.killContainer(name)
                _ = try await fixture.engine.waitContainer(name)
                // Nothing happens until the check interval passes on the pool's clock.
                try await fixture.clock.waitForSleepers()
                let before = await pool.currentStatus().passes
                fixture.clock.advance(by: .seconds(5))
                try await fixture.wait(pool, "a pass after the kill") { $0.passes > before && $0.idle == 2 }
                let members = try await fixture.provisioner.poolMembers(template: template.name)
                #expect(!members.contains { $0.id == victim }, "the dead member is removed")
                #expect(members.filter { $0.state == .idle }.count == 2)
                #expect(fixture.provisioner.metrics.snapshot().membersRetired == 1)
            }
        }
    }

    @Test("a template change recycles the old members; max_age recycles on the pool's clock")
    func recycling() async throws {
        let original = PoolFixture.template(minIdle: 2) { $0.pool.maxAge = .seconds(3600) }
        try await withPoolFixture(templates: [original]) { fixture in
            let pool = fixture.pool(original)
            let old = try await fixture.running(pool) {
                try await fixture.wait(pool, "2 idle") { $0.idle == 2 }
                let old = try await fixture.idleMembers(original)
                // max_age: an hour on the pool's clock, then one pass.
                try await fixture.clock.waitForSleepers()
                // An hour past the newest member's birth (the clock started before the members).
                fixture.clock.advance(by: .seconds(3600 + 300))
                try await fixture.wait(pool, "members replaced for age") { $0.passes >= 2 && $0.idle == 2 }
                let aged = try await fixture.idleMembers(original)
                #expect(aged.isDisjoint(with: old), "members older than max_age are replaced")
                return aged
            }
            // The same template with another setting: a new fingerprint.
            var changed = original
            changed.env["CHANGED"] = "1"
            let next = WarmPool(
                template: changed, provisioner: fixture.provisioner,
                configuration: {
                    var configuration = WarmPool.Configuration()
                    configuration.timer = fixture.timer
                    return configuration
                }())
            await next.reconcile()
            let status = await next.currentStatus()
            #expect(status.state == .ready)
            let members = try await fixture.provisioner.poolMembers(template: original.name)
            #expect(members.count == 2)
            #expect(Set(members.map(\.id)).isDisjoint(with: old), "old members are recycled")
            let fingerprint = try await fixture.provisioner.fingerprint(of: changed)
            #expect(members.allSatisfy { $0.templateHash == fingerprint })
        }
    }

    @Test("per-session env, labels and ttl bound after a warm claim reach every command")
    func lateBinding() async throws {
        let template = PoolFixture.template(minIdle: 1) {
            $0.env["FROM_TEMPLATE"] = "t"
            $0.setup = ["echo made > /tmp/setup-ran"]
        }
        try await withPoolFixture(templates: [template]) { fixture in
            let pool = fixture.pool(template)
            await pool.reconcile()
            #expect(await pool.currentStatus().idle == 1)
            let session = SessionID.random()
            let sandbox = try await fixture.provisioner.provision(
                fixture.request(template) {
                    $0.env = ["PER_SESSION": "s1", "FROM_TEMPLATE": "overridden"]
                    $0.labels = ["who": "test"]
                    $0.session = session
                    $0.ttl = .seconds(600)
                    $0.tenant = TenantID(unchecked: "acme")
                })
            #expect(sandbox.provisioning?.path == .warm)
            #expect(sandbox.containerName == "corral.acme.\(sandbox.id)")
            let result = try await sandbox.run(
                SandboxCommand(["sh", "-c", "echo $PER_SESSION $FROM_TEMPLATE; cat /tmp/setup-ran"]))
            #expect(result.stdout == "s1 overridden\nmade\n")
            let tool = try await sandbox.execute(tool: "bash", input: ["command": "echo $PER_SESSION"])
            #expect(tool.text == "s1\n")
            let info = try await sandbox.info()
            #expect(info.session == session)
            #expect(info.labels == ["who": "test"])
            #expect(info.path == .warm)
            #expect(info.expires != nil)
            // Another tenant's name finds nothing.
            await #expect(throws: CorralError.self) { try await fixture.provisioner.handle(sandbox.id).info() }
        }
    }

    @Test("expired, idle and orphaned sandboxes are reaped; stale records are removed")
    func reaper() async throws {
        let template = PoolFixture.template(minIdle: 1)
        try await withPoolFixture(templates: [template]) { fixture in
            let provisioner = fixture.provisioner
            let expiring = try await provisioner.provision(
                fixture.request(template) { $0.ttl = .seconds(3600) })
            let idle = try await provisioner.provision(
                fixture.request(template) {
                    $0.ttl = nil
                    $0.idleTTL = .seconds(600)
                })
            let keeper = try await provisioner.provision(fixture.request(template) { $0.ttl = .seconds(86_400) })
            let orphan = try await provisioner.provision(fixture.request(template))
            let store = try provisioner.records()
            // A claimed container whose record never got written.
            try FileManager.default.removeItem(
                at: store.sandboxDirectory(orphan.id).appendingPathComponent(SandboxRecordStore.recordFile))
            // A record whose container is gone.
            let stale = SandboxID.random()
            try store.write(
                SandboxRecord(
                    id: stale, tenant: .local, session: nil, template: nil, path: .cold, created: Date(), bound: Date(),
                    expires: nil, idleTTL: nil, env: [:], labels: [:]))
            var configuration = SandboxReaper.Configuration()
            configuration.timer = fixture.timer
            configuration.templates = [template.name]
            let reaper = SandboxReaper(provisioner: provisioner, configuration: configuration)

            // Now: nothing is due but the stale record (it has a record, so no grace applies).
            let first = try await reaper.sweep()
            #expect(first.removed == [stale: "stale-record"])
            // Two minutes on: the orphan is past its grace. Claim markers carry real file times
            // while the manual clock stood still through the provisioning (seconds, on a loaded
            // machine): the clock catches up with the wall first.
            let lag = max(0, Date().timeIntervalSince(fixture.clock.date))
            fixture.clock.advance(by: .seconds(lag) + .seconds(120))
            #expect(try await reaper.sweep().removed == [orphan.id: "orphan"])
            // Activity keeps the idle one; its absence for the idle ttl reaps it.
            _ = try await idle.run(SandboxCommand(["true"]))
            fixture.clock.advance(by: .seconds(400))
            #expect(try await reaper.sweep().removed.isEmpty)
            fixture.clock.advance(by: .seconds(200))
            #expect(try await reaper.sweep().removed == [idle.id: "idle"])
            fixture.clock.advance(by: .seconds(3000))
            #expect(try await reaper.sweep().removed == [expiring.id: "expired"])
            let left = try await provisioner.list().map(\.id)
            #expect(left == [keeper.id])
            #expect(provisioner.metrics.snapshot().reaped == ["orphan": 1, "idle": 1, "expired": 1])
            #expect(!FileManager.default.fileExists(atPath: store.sandboxDirectory(expiring.id).path))
        }
    }

    @Test("an engine outage during refill: degraded, retries with backoff, recovers by itself")
    func engineOutage() async throws {
        let template = PoolFixture.template(minIdle: 1)
        let socket = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-proxy-\(UUID().uuidString.prefix(6)).sock")
        let upstream = String(TestEnvironment.engineEndpoint.dropFirst("unix://".count))
        let proxy = try EngineProxy(upstream: upstream, socketPath: socket.path)
        defer { proxy.down() }
        let engine = try DockerEngineClient(parsing: proxy.endpoint)
        try await withPoolFixture(templates: [template], engine: engine) { fixture in
            _ = try fixture.provisioner.instanceID()
            proxy.down()
            let statusDirectory = fixture.stateDirectory.appendingPathComponent("pools")
            let pool = fixture.pool(template) { $0.statusDirectory = statusDirectory }
            try await fixture.running(pool) {
                let degraded = try await fixture.wait(pool, "degraded") { $0.state == .degraded }
                #expect(degraded.lastError?.contains("cannot connect") == true, "\(degraded.lastError ?? "")")
                // What `corral pool ls` in another process reads.
                let published = PoolStatus.published(in: statusDirectory)
                #expect(published.map(\.state) == [.degraded])
                #expect(published.first?.ownerAlive == true)
                // Backoff: 1s after the first failure, 2s after the second.
                try await fixture.clock.waitForSleepers()
                fixture.clock.advance(by: .seconds(1))
                try await fixture.wait(pool, "second failure") { $0.consecutiveFailures == 2 }
                try await fixture.clock.waitForSleepers()
                fixture.clock.advance(by: .milliseconds(1999))
                #expect(await pool.currentStatus().consecutiveFailures == 2, "no retry before the backoff ends")
                try proxy.up()
                fixture.clock.advance(by: .milliseconds(1))
                let recovered = try await fixture.wait(pool, "recovered") { $0.state == .ready && $0.idle == 1 }
                #expect(recovered.lastError == nil)
                #expect(PoolStatus.published(in: statusDirectory).map(\.state) == [.ready])
                #expect(fixture.clock.requestedSleeps.prefix(2) == [.seconds(1), .seconds(2)])
                #expect(fixture.provisioner.metrics.snapshot().refillFailures >= 2)
            }
        }
    }
}
