import CorralAPI
import CorralCore
import CorralHarness
import CorralLink
import CorralSandbox
import CurlHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOHTTP2
import ServiceLifecycle
import Synchronization
import TestSupport
import Testing

@testable import CorralFleet
@testable import CorralServer
@testable import CorralWorker

/// Issue 12: a control plane and a worker that dials it, each with a state directory of its own
/// on the test engine. The worker's link runs on loopback (plain HTTP is allowed there).
// Serialized: each case runs a control plane, one or two workers and their sandboxes, and all at
// once beside the whole suite they starved the harness crash test's runs on two cores.
@Suite("Workers that dial in", .engine, .serialized, .timeLimit(.minutes(10)))
struct WorkerLinkTests {
    static let acme = TenantID(unchecked: "acme")

    static func settings(_ configure: (inout WorkerListener.Settings) -> Void = { _ in })
        -> WorkerListener.Settings
    {
        var settings = WorkerListener.Settings(listen: "127.0.0.1:0")
        settings.fleet.heartbeat = .milliseconds(200)
        // The default grace, so that a loaded machine loses no live worker: with the whole
        // suite in one process on two cores, a worker's heartbeat answer has taken over 5 s, and
        // then over 15 s (each time the link closed under a call, CI's failures). The tests of
        // lost workers wait for the state, not a time.
        settings.fleet.grace = .seconds(30)
        configure(&settings)
        return settings
    }

    /// Runs a worker for `host` dialling `url` until `body` returns (or the worker stops by
    /// itself, which `body` sees through the returned task).
    static func withWorker(
        _ host: ServerFixture, url: String, token: String, name: String = "w1", group: String? = "vpc",
        configure: (inout WorkerAgent.Settings) -> Void = { _ in }, _ body: (Task<Void, any Error>) async throws -> Void
    ) async throws {
        var settings = WorkerAgent.Settings(server: url, token: token, name: name)
        settings.group = group
        settings.longestBackoff = .milliseconds(500)
        configure(&settings)
        let agent = WorkerAgent(settings: settings, host: host.server.host, logger: .init(label: "worker"))
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: [.init(service: agent)], logger: .init(label: "worker")))
        let task = Task { try await group.run() }
        do {
            try await body(task)
        } catch {
            await group.triggerGracefulShutdown()
            _ = try? await task.value
            throw error
        }
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }

    /// Waits until `fleet` has `name` connected with a heartbeat that says what it offers.
    static func waitConnected(_ fleet: WorkerFleet, _ name: String, epochAbove: Int64 = 0) async throws -> WorkerSummary
    {
        try await retrying(for: .seconds(120)) {
            guard
                let worker = fleet.summaries().first(where: {
                    $0.name == name && $0.state == "connected" && $0.capacity != nil && $0.epoch > epochAbove
                })
            else { throw CorralError(.unavailable, "worker \(name) not connected yet: \(fleet.summaries())") }
            return worker
        }
    }

    /// Waits until `fleet` reports `name` lost (its grace passed since its last heartbeat).
    static func waitLost(_ fleet: WorkerFleet, _ name: String) async throws {
        try await retrying(for: .seconds(120)) {
            guard fleet.summaries().contains(where: { $0.name == name && $0.state == "lost" }) else {
                throw CorralError(.unavailable, "worker \(name) not lost yet: \(fleet.summaries())")
            }
        }
    }

    /// A control plane with a worker port, and worker `w1` of group `vpc` (its own state
    /// directory) connected to it, with tenant acme bound to `vpc`; `body` gets them all.
    struct Linked {
        let control: ServerFixture
        let host: ServerFixture
        let live: LiveServer
        let fleet: WorkerFleet
        let acmeToken: String
    }

    static func withLinkedWorker(_ body: @Sendable (Linked) async throws -> Void) async throws {
        try await ServerFixture.with { control in
            try await ServerFixture.with { host in
                let acmeToken = try await control.server.tenants.add(Self.acme, groups: ["vpc"])
                let workerToken = try await WorkerTokenRegistry(stateDirectory: control.state).add(group: "vpc").token
                try await LiveServer.with(control, configure: { $0.workers = Self.settings() }) { live in
                    let fleet = try #require(live.server.fleet)
                    try await Self.withWorker(host, url: try #require(live.workerURL), token: workerToken) { _ in
                        _ = try await Self.waitConnected(fleet, "w1")
                        try await body(
                            Linked(control: control, host: host, live: live, fleet: fleet, acmeToken: acmeToken))
                    }
                }
            }
        }
    }

    @Test("a tenant bound to a group gets its sandboxes on that group's worker, and every call reaches them")
    func placedAndForwarded() async throws {
        try await Self.withLinkedWorker { linked in
            let (control, host, live, acmeToken) = (linked.control, linked.host, linked.live, linked.acmeToken)
            let worker = try #require(linked.fleet.summaries().first { $0.name == "w1" })
            #expect(worker.group == "vpc")
            #expect(worker.protocol == 1)
            #expect(worker.capacity?.maxSandboxes == 64)

            let endpoint = try HTTPEndpoint(parsing: "http://127.0.0.1:\(live.port)")
            let acme = try CorralClient(endpoint: endpoint, token: acmeToken)
            let unbound = try CorralClient(endpoint: endpoint, token: control.tokenA)
            let other = try CorralClient(endpoint: endpoint, token: control.tokenB)
            defer {
                acme.shutdown()
                unbound.shutdown()
                other.shutdown()
            }
            let created = try await acme.createSandbox(CreateSandboxRequest())
            // It runs on the worker's engine host, not on the control plane's.
            #expect(try await host.server.provisioner.list(tenant: Self.acme).map(\.id) == [created.id])
            #expect(try await control.server.provisioner.list(tenant: Self.acme).isEmpty)
            #expect(try await acme.sandbox(created.id).worker == "w1")
            let listed = try await acme.listSandboxes()
            #expect(listed.map(\.id) == [created.id])
            #expect(listed.first?.worker == "w1")

            // Streamed exec, a tool call, files both ways, a detached command.
            let output = Mutex("")
            let status = try await acme.exec(
                created.id, SandboxCommand(["sh", "-c", "echo out; echo err >&2; exit 3"])
            ) { _, bytes in output.withLock { $0 += String(decoding: bytes, as: UTF8.self) } }
            #expect(status.exitCode == 3)
            #expect(output.withLock { $0 }.contains("out"))
            #expect(output.withLock { $0 }.contains("err"))
            let tool = try await acme.execute(
                created.id, tool: "bash", input: .object(["command": .string("echo tool call")]))
            #expect(tool.text.contains("tool call"))
            let payload = (0..<200_000).map { _ in UInt8.random(in: 0...255) }
            try await acme.writeFile(
                created.id, path: "/tmp/blob",
                contents: AsyncThrowingStream {
                    $0.yield(payload); $0.finish()
                })
            let back = Mutex<[UInt8]>([])
            _ = try await acme.readFile(created.id, path: "/tmp/blob") { chunk in
                back.withLock { $0 += chunk }
            }
            #expect(back.withLock { $0 } == payload)
            let detached = try await acme.startDetached(
                created.id, StartCommandRequest(SandboxCommand(["sleep", "30"])))
            #expect(try await acme.commands(created.id).contains { $0.id == detached.id })
            try await acme.signalCommand(created.id, detached.id, "KILL")

            // A sandbox bound to a session: the session is the control plane's.
            let session = try await acme.createSession()
            var bound = CreateSandboxRequest()
            bound.session = session.id.rawValue
            let withSession = try await acme.createSandbox(bound)
            #expect(try await acme.sandbox(withSession.id).labels["session"] == session.id.rawValue)
            try await acme.removeSandbox(withSession.id)
            bound.session = "sess-nope"
            await #expect(throws: CorralError.self) { try await acme.createSandbox(bound) }

            // Another tenant sees nothing of it, through the worker too.
            await #expect(throws: CorralError.self) { try await other.sandbox(created.id) }
            #expect(try await other.listSandboxes().isEmpty)

            // An unbound tenant is in the default group: the control plane's own host.
            let local = try await unbound.createSandbox(CreateSandboxRequest())
            #expect(
                try await control.server.provisioner.list(tenant: TenantID(unchecked: "tenant-a")).map(\.id)
                    == [local.id])
            #expect(try await unbound.sandbox(local.id).worker == nil)

            try await acme.removeSandbox(created.id)
            #expect(try await host.server.provisioner.list(tenant: Self.acme).isEmpty)
            try await unbound.removeSandbox(local.id)
        }
    }

    @Test("a tenant's sandbox quota counts its sandboxes on workers and on the control plane's host together")
    func quotaAcrossTheFleet() async throws {
        try await ServerFixture.with(sandboxesPerTenant: 2) { control in
            try await ServerFixture.with { host in
                // Bound to the default group: the control plane's own host and the worker both take it.
                let token = try await control.server.tenants.add(Self.acme)
                let workerToken = try await WorkerTokenRegistry(stateDirectory: control.state).add(group: "default")
                    .token
                try await LiveServer.with(control, configure: { $0.workers = Self.settings() }) { live in
                    let fleet = try #require(live.server.fleet)
                    try await Self.withWorker(host, url: try #require(live.workerURL), token: workerToken, group: nil) {
                        _ in
                        _ = try await Self.waitConnected(fleet, "w1")
                        let client = try CorralClient(
                            endpoint: try HTTPEndpoint(parsing: "http://127.0.0.1:\(live.port)"), token: token)
                        defer { client.shutdown() }
                        let made = [
                            try await client.createSandbox(CreateSandboxRequest()).id,
                            try await client.createSandbox(CreateSandboxRequest()).id,
                        ]
                        let third = await #expect(throws: CorralError.self) {
                            try await client.createSandbox(CreateSandboxRequest())
                        }
                        #expect(third?.code.rawValue == "quota_exceeded", "\(String(describing: third))")
                        let here = try await control.server.provisioner.list(tenant: Self.acme).count
                        let there = try await host.server.provisioner.list(tenant: Self.acme).count
                        #expect(here + there == 2)
                        for id in made { try await client.removeSandbox(id) }
                    }
                }
            }
        }
    }

    // Once removed as a stall of the link: it was the sandbox's control connection, where 64 quiet
    // commands held the whole output budget and the check beside them waited for one to end.
    @Test("one link carries more than 100 calls at once, and its heartbeats go on meanwhile")
    func manyCallsOnOneLink() async throws {
        try await Self.withLinkedWorker { linked in
            let (live, fleet, token) = (linked.live, linked.fleet, linked.acmeToken)
            let client = try CorralClient(
                endpoint: try HTTPEndpoint(parsing: "http://127.0.0.1:\(live.port)"), token: token)
            defer { client.shutdown() }
            var request = CreateSandboxRequest()
            request.pids = 1024
            let id = try await client.createSandbox(request).id
            let calls = 110
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<calls {
                    group.addTask {
                        _ = try? await client.execute(
                            id, tool: "bash",
                            input: .object([
                                "command": .string("touch /tmp/m.\(index); sleep 20; rm /tmp/m.\(index)")
                            ]))
                    }
                }
                // Every call is running at once on the worker (past the 100 streams
                // a default HTTP/2 server takes), and another call still gets through.
                try await retrying(for: .seconds(90)) {
                    let output = Mutex("")
                    _ = try await client.exec(
                        id, SandboxCommand(["sh", "-c", "ls /tmp | grep -c '^m\\.'"])
                    ) {
                        _, bytes in output.withLock { $0 += String(decoding: bytes, as: UTF8.self) }
                    }
                    let running = Int(
                        output.withLock { $0 }.trimmingCharacters(in: .whitespacesAndNewlines))
                    guard running == calls else {
                        throw CorralError(.unavailable, "\(running ?? -1) of \(calls) calls running")
                    }
                }
                let worker = try #require(fleet.summaries().first)
                #expect(worker.state == "connected")
                #expect(try #require(worker.lastHeartbeat).timeIntervalSinceNow > -2)
                group.cancelAll()
            }
            try await client.removeSandbox(id)
        }
    }

    @Test("removing a tenant counts and purges its sandboxes on workers too")
    func tenantRemovalReachesWorkers() async throws {
        try await Self.withLinkedWorker { linked in
            let (host, live, token) = (linked.host, linked.live, linked.acmeToken)
            let client = try CorralClient(
                endpoint: try HTTPEndpoint(parsing: "http://127.0.0.1:\(live.port)"), token: token)
            let admin = try CorralClient(endpoint: .unixSocket(path: live.socketPath))
            defer {
                client.shutdown()
                admin.shutdown()
            }
            let id = try await client.createSandbox(CreateSandboxRequest()).id
            let refused = await #expect(throws: CorralError.self) {
                _ = try await admin.removeTenant(Self.acme, purge: false)
            }
            #expect(
                refused?.message.contains("1 sandbox on a worker") == true, "\(String(describing: refused))"
            )
            let removed = try await admin.removeTenant(Self.acme, purge: true)
            #expect(removed.removed.owned["sandboxes on workers"] == [id.rawValue])
            #expect(try await host.server.provisioner.list(tenant: Self.acme).isEmpty)
        }
    }

    @Test("a lost worker's sandboxes fail with an error that says so, and are removed when it returns")
    func lostAndReconciled() async throws {
        try await ServerFixture.with { control in
            try await ServerFixture.with { host in
                let acmeToken = try await control.server.tenants.add(Self.acme, groups: ["vpc"])
                let workerToken = try await WorkerTokenRegistry(stateDirectory: control.state).add(group: "vpc").token
                try await LiveServer.with(control, configure: { $0.workers = Self.settings() }) { live in
                    let fleet = try #require(live.server.fleet)
                    let url = try #require(live.workerURL)
                    let endpoint = try HTTPEndpoint(parsing: "http://127.0.0.1:\(live.port)")
                    let acme = try CorralClient(endpoint: endpoint, token: acmeToken)
                    defer { acme.shutdown() }
                    var firstEpoch: Int64 = 0
                    var id: SandboxID?
                    try await Self.withWorker(host, url: url, token: workerToken) { _ in
                        firstEpoch = try await Self.waitConnected(fleet, "w1").epoch
                        id = try await acme.createSandbox(CreateSandboxRequest()).id
                    }
                    let sandbox = try #require(id)
                    // The link is down: within the grace, "down" and a retry; past it, "lost". A call
                    // made while the link is closing hears "the link to worker 'w1' is down".
                    let down = await #expect(throws: CorralError.self) {
                        _ = try await acme.execute(sandbox, tool: "bash", input: .object(["command": .string("true")]))
                    }
                    #expect(
                        down?.message.contains("is down") == true || down?.message.contains("lost") == true,
                        "\(String(describing: down))")
                    try await Self.waitLost(fleet, "w1")
                    let lost = await #expect(throws: CorralError.self) { _ = try await acme.sandbox(sandbox) }
                    #expect(lost?.message.contains("which is lost") == true, "\(String(describing: lost))")
                    #expect(fleet.summaries().first?.state == "lost")
                    // Still on the worker's engine until it comes back.
                    #expect(try await host.server.provisioner.list(tenant: Self.acme).map(\.id) == [sandbox])
                    try await Self.withWorker(host, url: url, token: workerToken) { _ in
                        _ = try await Self.waitConnected(fleet, "w1", epochAbove: firstEpoch)
                        try await retrying(for: .seconds(30)) {
                            guard try await host.server.provisioner.list(tenant: Self.acme).isEmpty else {
                                throw CorralError(.unavailable, "the given-up sandbox is still there")
                            }
                        }
                    }
                }
            }
        }
    }

    @Test("pool targets set per group on the control plane are split among its workers, and follow them")
    func poolTargetsPushed() async throws {
        var small = SandboxTemplate(name: TemplateName(unchecked: "small"))
        small.pool.maxTotal = 4
        try await ServerFixture.with { control in
            try await ServerFixture.with(templates: [small], poolEveryTemplate: true) { first in
                try await ServerFixture.with(templates: [small], poolEveryTemplate: true) { second in
                    let workerToken = try await WorkerTokenRegistry(stateDirectory: control.state).add(group: "vpc")
                        .token
                    let configure: (inout CorralServer.Configuration) -> Void = {
                        $0.workers = Self.settings {
                            $0.fleet.pools = [
                                .init(group: "vpc", template: "small", minIdle: 3),
                                // Another group's target and a template no worker offers: neither
                                // reaches these workers.
                                .init(group: "gpu", template: "small", minIdle: 5),
                                .init(group: "vpc", template: "absent", minIdle: 2),
                            ]
                        }
                    }
                    // The workers' pools run as `corral worker` runs them: empty until a target comes.
                    let pools = (first.server.runner.pools + second.server.runner.pools).map { pool in
                        Task { try await pool.run() }
                    }
                    defer { for pool in pools { pool.cancel() } }
                    try await LiveServer.with(control, configure: configure) { live in
                        let fleet = try #require(live.server.fleet)
                        let url = try #require(live.workerURL)
                        func pool(_ name: String) -> WorkerPoolStatus? {
                            fleet.summaries().first { $0.name == name }?.pools.first { $0.template == "small" }
                        }
                        func waitFor(_ name: String, target: Int, ready: Int) async throws {
                            try await retrying(for: .seconds(120)) {
                                guard let status = pool(name), status.target == target, status.ready == ready else {
                                    throw CorralError(.unavailable, "\(name): \(String(describing: pool(name)))")
                                }
                            }
                        }
                        try await Self.withWorker(first, url: url, token: workerToken, name: "w1") { _ in
                            _ = try await Self.waitConnected(fleet, "w1")
                            // Alone in its group, w1 keeps the whole target.
                            try await waitFor("w1", target: 3, ready: 3)
                            try await Self.withWorker(second, url: url, token: workerToken, name: "w2") { _ in
                                // Two split three: w1 (first by name) keeps two, w2 makes one;
                                // w1's third member is retired.
                                try await waitFor("w2", target: 1, ready: 1)
                                try await waitFor("w1", target: 2, ready: 2)
                                #expect(try await first.server.provisioner.list().isEmpty)
                            }
                            // w2 left: w1 takes the whole target again.
                            try await waitFor("w1", target: 3, ready: 3)
                        }
                        let engineMembers = try await first.engine.listContainers(
                            all: true, labels: ["\(SandboxLabels.pool)=small"])
                        #expect(engineMembers.count >= 3)
                    }
                }
            }
        }
    }

    @Test("E2B's API places a bound tenant's sandbox on its worker, and every E2B call for it reaches it")
    func e2bOnWorkers() async throws {
        try await Self.withLinkedWorker { linked in
            let (control, host, live, acmeToken) = (linked.control, linked.host, linked.live, linked.acmeToken)
            let router = live.server.listenerRouter(auth: .tokens)
            try await Application(router: router).test(.router) { client in
                let created = try await client.e2b(
                    .post, "/v2/sandboxes", key: acmeToken,
                    json: #"{"templateID":"base","metadata":{"k":"v"},"timeout":600}"#)
                #expect(created.status == .created, "\(String(buffer: created.body))")
                let body = try JSONDecoder().decode(JSONValue.self, from: Data(buffer: created.body))
                let idText = try #require(body["sandboxID"]?.stringValue)
                let accessToken = try #require(body["envdAccessToken"]?.stringValue)
                let id = try #require(SandboxID(idText))
                // On the worker's engine host, not the control plane's.
                #expect(try await host.server.provisioner.list(tenant: Self.acme).map(\.id) == [id])
                #expect(try await control.server.provisioner.list(tenant: Self.acme).isEmpty)

                // envd's calls, with the sandbox's access token, which the worker checks.
                let made = try await client.envd(
                    "/filesystem.Filesystem/MakeDir", sandbox: idText, token: accessToken,
                    json: #"{"path":"/tmp/from-e2b"}"#)
                #expect(made.status == .ok, "\(String(buffer: made.body))")
                let stat = try await client.envd(
                    "/filesystem.Filesystem/Stat", sandbox: idText, token: accessToken,
                    json: #"{"path":"/tmp/from-e2b"}"#)
                #expect(String(buffer: stat.body).contains("FILE_TYPE_DIRECTORY"))
                let refused = try await client.envd(
                    "/filesystem.Filesystem/Stat", sandbox: idText, token: acmeToken,
                    json: #"{"path":"/tmp"}"#)
                #expect(refused.status == .unauthorized)
                let file = try await client.envd(
                    "/files?path=/etc/hostname", sandbox: idText, token: accessToken, method: .get)
                #expect(file.status == .ok)
                #expect(String(buffer: file.body).contains("sandbox"))
                let health = try await client.envd("/health", sandbox: idText, token: nil, method: .get)
                #expect(health.status == .noContent)

                // E2B's control plane by id, and its listing, as the tenant's.
                let listed = try await client.e2b(.get, "/v2/sandboxes?metadata=k%3Dv", key: acmeToken)
                #expect(String(buffer: listed.body).contains(idText), "\(String(buffer: listed.body))")
                let detail = try await client.e2b(.get, "/sandboxes/\(idText)", key: acmeToken)
                #expect(detail.status == .ok)
                #expect(String(buffer: detail.body).contains(accessToken))
                let connected = try await client.e2b(
                    .post, "/v2/sandboxes/\(idText)/connect", key: acmeToken, json: #"{"timeout":900}"#)
                #expect(connected.status == .ok, "\(String(buffer: connected.body))")
                // Another tenant's key reaches nothing of it.
                let other = try await client.e2b(.get, "/sandboxes/\(idText)", key: control.tokenB)
                #expect(other.status == .notFound)
                #expect(
                    !String(buffer: try await client.e2b(.get, "/v2/sandboxes", key: control.tokenB).body)
                        .contains(idText))

                // corral's own paths never reach the worker as envd's calls, whatever the headers
                // say: there the link serves its status and pool targets to the control plane.
                for (method, path) in [(HTTPRequest.Method.get, "/v1/worker/status"), (.put, "/v1/worker/pools")] {
                    let sneaked = try await client.envd(
                        path, sandbox: idText, token: accessToken, json: #"{"targets":[]}"#, method: method)
                    #expect(sneaked.status != .ok, "\(method) \(path) reached the worker")
                    #expect(!String(buffer: sneaked.body).contains("maxSandboxes"))
                }

                let killed = try await client.e2b(.delete, "/sandboxes/\(idText)", key: acmeToken)
                #expect(killed.status == .noContent)
                #expect(try await host.server.provisioner.list(tenant: Self.acme).isEmpty)
                let gone = try await client.e2b(.get, "/sandboxes/\(idText)", key: acmeToken)
                #expect(gone.status == .notFound)
            }
        }
    }

    @Test(
        "a restarted control plane learns its workers' sandboxes again from their heartbeats, and says 'not known yet' (503) until then, to the API and to a session's hand"
    )
    func controlPlaneRestart() async throws {
        try await ServerFixture.with { control in
            try await ServerFixture.with { host in
                let acmeToken = try await control.server.tenants.add(Self.acme, groups: ["vpc"])
                let workerToken = try await WorkerTokenRegistry(stateDirectory: control.state).add(group: "vpc").token
                let port = try Self.freePort()
                let settings = Self.settings { $0.listen = "127.0.0.1:\(port)" }
                let url = "http://127.0.0.1:\(port)"
                let id = Mutex<SandboxID?>(nil)
                try await Self.withWorker(host, url: url, token: workerToken) { _ in
                    try await LiveServer.with(control, configure: { $0.workers = settings }) { live in
                        _ = try await Self.waitConnected(try #require(live.server.fleet), "w1")
                        let acme = try CorralClient(
                            endpoint: try HTTPEndpoint(parsing: "http://127.0.0.1:\(live.port)"), token: acmeToken)
                        defer { acme.shutdown() }
                        let created = try await acme.createSandbox(CreateSandboxRequest()).id
                        id.withLock { $0 = created }
                    }
                }
                let sandbox = try #require(id.withLock { $0 })
                // A new control plane process, nothing in memory, and the worker not back yet.
                try await LiveServer.with(control, configure: { $0.workers = settings }) { live in
                    let fleet = try #require(live.server.fleet)
                    let acme = try CorralClient(
                        endpoint: try HTTPEndpoint(parsing: "http://127.0.0.1:\(live.port)"), token: acmeToken)
                    defer { acme.shutdown() }
                    let early = await #expect(throws: CorralError.self) { _ = try await acme.sandbox(sandbox) }
                    #expect(early?.code == .unavailable, "\(String(describing: early))")
                    #expect(early?.message.contains("not known here yet") == true, "\(String(describing: early))")
                    // A session's hand for it waits for the worker rather than taking it for gone.
                    let hands = FleetHands(
                        local: SandboxHands { control.server.provisioner }, fleet: fleet, server: live.server)
                    let hand = hands.reattach(
                        sandbox,
                        request: HandRequest(
                            session: SessionID("se-restartcheck")!, tenant: Self.acme, name: "main", spec: HandSpec()))
                    #expect(hand is RemoteHand)
                    let liveness = Task { await hand.liveness() }
                    try await Self.withWorker(host, url: url, token: workerToken) { _ in
                        _ = try await Self.waitConnected(fleet, "w1")
                        #expect(await liveness.value == .running)
                        let output = try await acme.execute(
                            sandbox, tool: "bash", input: .object(["command": .string("echo still here")]))
                        #expect(output.text.contains("still here"))
                        try await acme.removeSandbox(sandbox)
                    }
                }
            }
        }
    }

    /// The agent's script: a call that leaves a file, a long call cut short by its worker's
    /// end, and (in a second run, once the worker is lost) a call that finds the sandbox gone.
    static let agentScript = """
        {"text": "one", "tool_calls": [{"name": "bash", "input": {"command": "echo kept > /workspace/f; echo first"}}]}
        {"text": "two", "tool_calls": [{"name": "bash", "input": {"command": "sleep 30; echo slept"}}]}
        {"text": "waiting"}
        {"text": "three", "tool_calls": [{"name": "bash", "input": {"command": "cat /workspace/f || echo gone"}}]}
        {"text": "done"}
        """

    @Test("an agent's sandbox runs on a worker; a call its link cut is unknown; a lost worker's sandbox is replaced")
    func agentOnWorkers() async throws {
        try await withTemporaryDirectory { directory in
            let script = directory.appendingPathComponent("brain.jsonl")
            try Data(Self.agentScript.utf8).write(to: script)
            try await ServerFixture.with { control in
                try await ServerFixture.with { first in
                    try await ServerFixture.with { second in
                        try await Self.agentRun(control: control, hosts: (first, second), script: script)
                    }
                }
            }
        }
    }

    static func agentRun(control: ServerFixture, hosts: (ServerFixture, ServerFixture), script: URL) async throws {
        let registry = WorkerTokenRegistry(stateDirectory: control.state)
        // A control plane that runs no sandboxes itself: the operator's runs go to the workers.
        let settings = Self.settings { $0.fleet.localGroup = nil }
        try await LiveServer.with(control, configure: { $0.workers = settings }) { live in
            let fleet = try #require(live.server.fleet)
            let url = try #require(live.workerURL)
            let client = try CorralClient(endpoint: .unixSocket(path: live.socketPath))
            defer { client.shutdown() }
            // Only w1 at first: the session's sandbox goes there.
            let w1 = try await RunningWorker(
                hosts.0, url: url, token: try registry.add(group: "default").token, name: "w1")
            var w2: RunningWorker?
            do {
                _ = try await Self.waitConnected(fleet, "w1")
                let started = try await client.post(
                    "/v1/agents", #"{"task": "demo", "brain": "scripted:\#(script.path)", "maxTurns": 8}"#)
                let session = try #require(started["session"]?.stringValue)
                let id = try SessionID(validating: session)
                try await retrying(for: .seconds(60)) {
                    let page = try await client.events(id, from: 1, limit: 100)
                    guard page.events.filter({ $0.type == "tool.intent" }).count >= 2 else {
                        throw CorralError(.unavailable, "the long call has not started")
                    }
                }
                #expect(try await hosts.0.server.provisioner.list(tenant: .local).count == 1)
                w2 = try await RunningWorker(
                    hosts.1, url: url, token: try registry.add(group: "default").token, name: "w2")
                _ = try await Self.waitConnected(fleet, "w2")
                // w1 goes away mid-call: the call's outcome is unknown.
                await w1.stop()
                try await client.waitForEvent(session, type: "session.ended")
                var events = try await client.events(id, from: 1, limit: 200).events
                let results = events.filter { $0.type == "tool.result" }
                #expect(results.first?.data["status"]?.stringValue == "ok")
                let cut = results.dropFirst().first
                #expect(cut?.data["status"]?.stringValue == "unknown", "\(results)")
                #expect(cut?.data["text"]?.stringValue?.contains("outcome of this call is unknown") == true)
                // Past the grace w1 is lost; the next call finds its sandbox gone and gets a new one on w2.
                try await Self.waitLost(fleet, "w1")
                _ = try await client.post("/v1/sessions/\(session)/harness/run", #"{"message": "go on"}"#)
                try await retrying(for: .seconds(60)) {
                    events = try await client.events(id, from: 1, limit: 200).events
                    guard events.filter({ $0.type == "session.ended" }).count >= 2 else {
                        throw CorralError(.unavailable, "the second run has not ended")
                    }
                }
                #expect(events.contains { $0.type == "sandbox.lost" })
                let provisioned = events.filter { $0.type == "sandbox.provisioned" }
                #expect(provisioned.count == 2)
                #expect(provisioned.last?.data["replaces"] != nil)
                let last = events.filter { $0.type == "tool.result" }.last
                #expect(last?.data["text"]?.stringValue?.contains("was lost") == true, "\(String(describing: last))")
                #expect(try await hosts.1.server.provisioner.list(tenant: .local).count == 1)
            } catch {
                await w1.stop()
                await w2?.stop()
                throw error
            }
            await w1.stop()
            await w2?.stop()
        }
    }

    @Test("the handshake refuses a bad token, another group's worker and an unknown protocol, each with its reason")
    func handshakeRefusals() async throws {
        try await ServerFixture.with { control in
            let token = try await WorkerTokenRegistry(stateDirectory: control.state).add(group: "vpc").token
            try await LiveServer.with(control, configure: { $0.workers = Self.settings() }) { live in
                let url = try #require(live.workerURL)
                let port = try #require(URL(string: url)?.port)
                func handshake(_ headers: [String]) async throws -> RawResponse {
                    try await runOnThread {
                        let connection = try RawConnection(port: port)
                        connection.send(
                            ([
                                "GET /v1/workers/connect HTTP/1.1", "Host: x", "Connection: Upgrade",
                                "Upgrade: corral-worker",
                            ]
                                + headers + ["", ""]).joined(separator: "\r\n"))
                        return try #require(connection.readResponse(timeout: 10))
                    }
                }
                let good = ["Authorization: Bearer \(token)", "Corral-Worker-Name: w9"]
                let badToken = try await handshake([
                    "Authorization: Bearer corral_nope", "Corral-Worker-Name: w9", "Corral-Worker-Protocol: 1",
                ])
                #expect(badToken.status == 401)
                #expect(badToken.error?.message == "the worker token is not valid")
                let wrongGroup = try await handshake(
                    good + ["Corral-Worker-Group: other", "Corral-Worker-Protocol: 1"])
                #expect(wrongGroup.status == 403)
                let newer = try await handshake(good + ["Corral-Worker-Protocol: 2-3"])
                #expect(newer.status == 426)
                #expect(newer.headers["corral-worker-protocol"] == "1")
                #expect(newer.error?.message.contains("speaks worker protocol 1; the worker speaks 2-3") == true)
                let badName = try await handshake([
                    "Authorization: Bearer \(token)", "Corral-Worker-Name: ../x", "Corral-Worker-Protocol: 1",
                ])
                #expect(badName.status == 400)
                let notAWorker = try await runOnThread {
                    let connection = try RawConnection(port: port)
                    connection.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    return try #require(connection.readResponse(timeout: 10))
                }
                #expect(notAWorker.status == 400)
                #expect(live.server.fleet?.summaries().isEmpty == true)

                // The worker's side: a refusal no retry mends stops it with the control plane's words.
                var settings = WorkerAgent.Settings(server: url, token: "corral_nope", name: "w9")
                settings.longestBackoff = .milliseconds(200)
                let agent = WorkerAgent(settings: settings, host: control.server.host, logger: .init(label: "worker"))
                let error = await #expect(throws: CorralError.self) { try await agent.run() }
                #expect(error?.message == "the worker token is not valid")
            }
        }
    }

    @Test(
        "a link that sends malformed HTTP/2 after its 101, or nothing at all, is closed, and the worker port carries on"
    )
    func malformedFrames() async throws {
        try await ServerFixture.with { control in
            try await ServerFixture.with { host in
                let token = try await WorkerTokenRegistry(stateDirectory: control.state).add(group: "vpc").token
                try await LiveServer.with(control, configure: { $0.workers = Self.settings() }) { live in
                    let fleet = try #require(live.server.fleet)
                    let url = try #require(live.workerURL)
                    let port = try #require(URL(string: url)?.port)
                    @Sendable func admitted(_ name: String) throws -> RawConnection {
                        let connection = try RawConnection(port: port)
                        connection.send(
                            [
                                "GET /v1/workers/connect HTTP/1.1", "Host: x", "Connection: Upgrade",
                                "Upgrade: corral-worker", "Authorization: Bearer \(token)",
                                "Corral-Worker-Name: \(name)",
                                "Corral-Worker-Protocol: 1", "", "",
                            ].joined(separator: "\r\n"))
                        return connection
                    }
                    let (head, closed) = try await runOnThread { () -> (String, Bool) in
                        let connection = try admitted("w9")
                        // The 101, then the control plane's HTTP/2 preface; then bytes that are no
                        // HTTP/2 frame where the worker's SETTINGS should be.
                        let first = connection.readUntilClosed(timeout: 2)
                        connection.send([UInt8](repeating: UInt8(ascii: "x"), count: 4096))
                        let after = connection.readUntilClosed(timeout: 20)
                        return (String(decoding: first.bytes.prefix(12), as: UTF8.self), after.closed)
                    }
                    #expect(head == "HTTP/1.1 101")
                    #expect(closed, "the control plane kept a link that spoke no HTTP/2")
                    // A worker that takes the 101 and then never reads nor answers: its heartbeat
                    // gets no answer, and its link is closed at the grace (5 s here).
                    let silent = try await runOnThread { () -> (closed: Bool, seconds: TimeInterval) in
                        let connection = try admitted("w8")
                        let waited = connection.readUntilClosed(timeout: 60)
                        return (waited.closed, waited.seconds)
                    }
                    #expect(silent.closed, "a silent link stayed open")
                    #expect(silent.seconds >= 4, "closed after \(silent.seconds) s, before the grace")
                    try await retrying(for: .seconds(30)) {
                        guard fleet.summaries().first(where: { $0.name == "w9" })?.state != "connected" else {
                            throw CorralError(.unavailable, "w9 still connected")
                        }
                    }
                    // The port and the fleet carry on: a real worker connects and is used.
                    try await Self.withWorker(host, url: url, token: token) { _ in
                        _ = try await Self.waitConnected(fleet, "w1")
                    }
                }
            }
        }
    }

    @Test("on its link a worker refuses a stale epoch, and serves sandboxes, pools and status only")
    func linkScopeAndEpoch() async throws {
        try await ServerFixture.with { host in
            let status = WorkerStatus(
                name: "w", group: "default", version: "t", epoch: 7,
                capacity: .init(cpus: 1, memoryBytes: 1, maxSandboxes: 1), templates: [], pools: [], sandboxes: [])
            let app = Application(router: host.server.workerRouter(currentEpoch: { 7 }, status: { status }))
            try await app.test(.router) { client in
                func call(_ method: HTTPRequest.Method, _ uri: String, epoch: Int64, tenant: String = "acme")
                    async throws
                    -> TestResponse
                {
                    var headers = HTTPFields()
                    headers[corral: WorkerProtocol.epochHeader] = String(epoch)
                    headers[corral: WorkerProtocol.tenantHeader] = tenant
                    return try await client.execute(uri: uri, method: method, headers: headers, body: nil)
                }
                let stale = try await call(.get, "/v1/sandboxes", epoch: 6)
                #expect(stale.status == .conflict)
                #expect(stale.error?.message.contains("stale control-plane link") == true)
                #expect(try await call(.get, "/v1/sandboxes", epoch: 7).status == .ok)
                #expect(try await call(.get, "/v1/worker/status", epoch: 7, tenant: "local").status == .ok)
                // The control plane's own business is not served on a worker's link, even as the operator.
                for (method, uri) in [
                    (HTTPRequest.Method.get, "/v1/tenants"), (.post, "/v1/agents"), (.get, "/v1/sessions"),
                    (.get, "/v1/workers"),
                ] {
                    let refused = try await call(method, uri, epoch: 7, tenant: "local")
                    #expect(refused.status == .notFound, "\(method) \(uri): \(refused.status)")
                }
            }
        }
    }

    @Test("a worker's name stays in its group: another group's token cannot take its link over")
    func nameStaysInItsGroup() async throws {
        try await ServerFixture.with { control in
            try await ServerFixture.with { host in
                let registry = WorkerTokenRegistry(stateDirectory: control.state)
                let vpc = try await registry.add(group: "vpc").token
                let other = try await registry.add(group: "other").token
                try await LiveServer.with(control, configure: { $0.workers = Self.settings() }) { live in
                    let fleet = try #require(live.server.fleet)
                    let url = try #require(live.workerURL)
                    try await Self.withWorker(host, url: url, token: vpc) { _ in
                        let first = try await Self.waitConnected(fleet, "w1")
                        var settings = WorkerAgent.Settings(server: url, token: other, name: "w1")
                        settings.longestBackoff = .milliseconds(200)
                        let impostor = WorkerAgent(
                            settings: settings, host: host.server.host, logger: .init(label: "impostor"))
                        let error = await #expect(throws: CorralError.self) { try await impostor.run() }
                        #expect(error?.message.contains("is in group 'vpc'") == true, "\(String(describing: error))")
                        #expect(fleet.summaries().first?.epoch == first.epoch)
                    }
                }
            }
        }
    }

    @Test("a revoked worker token closes the link that is up, and the worker's next dial is refused")
    func revokedTokenEndsTheLink() async throws {
        try await ServerFixture.with { control in
            try await ServerFixture.with { host in
                let registry = WorkerTokenRegistry(stateDirectory: control.state)
                let (token, entry) = try await registry.add(group: "vpc")
                try await LiveServer.with(control, configure: { $0.workers = Self.settings() }) { live in
                    let fleet = try #require(live.server.fleet)
                    try await Self.withWorker(host, url: try #require(live.workerURL), token: token) { worker in
                        _ = try await Self.waitConnected(fleet, "w1")
                        #expect(try await registry.remove(id: entry.id))
                        // The worker stops by itself, with the control plane's reason.
                        let error = await #expect(throws: CorralError.self) { try await worker.value }
                        #expect(error?.message.contains("not valid") == true, "\(String(describing: error))")
                        #expect(fleet.summaries().first?.state != "connected")
                    }
                }
            }
        }
    }

    @Test("plain http is refused for a control plane off loopback, and a listener off loopback needs TLS")
    func plainHTTPOnlyOnLoopback() throws {
        #expect(throws: CorralError.self) { try WorkerAgent.Target("http://192.0.2.1:7431") }
        #expect(try WorkerAgent.Target("https://192.0.2.1:7431").secure)
        #expect(try !WorkerAgent.Target("http://127.0.0.1:7431").secure)
        // A name that starts like a loopback address is not one.
        #expect(throws: CorralError.self) { try WorkerAgent.Target("http://127.example.com:7431") }
        #expect(ListenAddress.isLoopback("127.0.0.2") && ListenAddress.isLoopback("::1"))
        #expect(!ListenAddress.isLoopback("127.example.com") && !ListenAddress.isLoopback("10.0.0.1"))
        #expect(WorkerProtocol.negotiate(1...3, with: 1...1) == 1)
        #expect(WorkerProtocol.negotiate(2...3, with: 1...1) == nil)
        #expect(WorkerProtocol.parse("1-2") == 1...2)
        #expect(WorkerProtocol.parse("2-1") == nil)
    }

    @Test("a stream's HTTP/2 error costs that call only; a connection's closes the link")
    func streamErrorsKeepTheLink() {
        // 110 calls at once once closed a link on a frame for a stream that had just ended.
        #expect(CloseOnConnectionError.isStreamScoped(NIOHTTP2Errors.noSuchStream(streamID: 241)))
        #expect(CloseOnConnectionError.isStreamScoped(NIOHTTP2Errors.streamClosed(streamID: 3, errorCode: .cancel)))
        #expect(!CloseOnConnectionError.isStreamScoped(NIOHTTP2Errors.unableToParseFrame()))
        #expect(!CloseOnConnectionError.isStreamScoped(NIOHTTP2Errors.badClientMagic()))
    }

    @Test("client certificates: --cert needs --key and TLS, unreadable files say which; client_ca needs TLS")
    func clientCertificateSettings() async throws {
        try await ServerFixture.with { host in
            func failure(_ configure: (inout WorkerAgent.Settings) -> Void) async -> String? {
                var settings = WorkerAgent.Settings(server: "https://127.0.0.1:1", token: "t", name: "w")
                configure(&settings)
                let agent = WorkerAgent(settings: settings, host: host.server.host, logger: .init(label: "w"))
                let error = await #expect(throws: CorralError.self) { try await agent.run() }
                return error?.message
            }
            let onlyCertificate = await failure { $0.certificateFile = "/nonexistent/worker.pem" }
            #expect(onlyCertificate?.contains("--cert and --key go together") == true)
            let plain = await failure {
                $0.server = "http://127.0.0.1:1"
                $0.certificateFile = "/nonexistent/worker.pem"
                $0.keyFile = "/nonexistent/worker.key"
            }
            #expect(plain?.contains("a client certificate needs TLS") == true)
            let unreadable = await failure {
                $0.certificateFile = "/nonexistent/worker.pem"
                $0.keyFile = "/nonexistent/worker.key"
            }
            #expect(unreadable?.contains("cannot use --cert /nonexistent/worker.pem") == true)
        }
        var listener = WorkerListener.Settings(listen: "127.0.0.1:0")
        listener.clientCA = "/nonexistent/ca.pem"
        let error = #expect(throws: CorralError.self) { try WorkerListener.makeTLS(listener, host: "127.0.0.1") }
        #expect(error?.message.contains("client_ca /nonexistent/ca.pem needs TLS") == true)
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// A worker started and stopped by hand (the agent test needs one to outlive another).
final class RunningWorker: Sendable {
    let group: ServiceGroup
    let task: Task<Void, any Error>

    init(_ host: ServerFixture, url: String, token: String, name: String) throws {
        var settings = WorkerAgent.Settings(server: url, token: token, name: name)
        settings.longestBackoff = .milliseconds(500)
        let agent = WorkerAgent(settings: settings, host: host.server.host, logger: .init(label: name))
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: [.init(service: agent)], logger: .init(label: name)))
        self.group = group
        task = Task { try await group.run() }
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}
