import CorralAPI
import CorralCore
import CorralSandbox
import CorralService
import CurlHTTP
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import CorralFleet
@testable import CorralServer
@testable import CorralWorker

/// Issue 13: two control-plane replicas over one PostgreSQL schema and one worker. The worker
/// dials one replica (its `--server`); the replicas find each other in the store and tell it,
/// and it keeps a link to each, so that either replica serves every sandbox on it.
@Suite("Workers and several control-plane replicas", .engine, .serialized, .timeLimit(.minutes(10)))
struct ReplicaWorkerTests {
    static let acme = TenantID(unchecked: "acme")

    @Test(
        "a worker that dials one replica links to the other too; either serves a sandbox the other made, at once; the quota counts it once; the second serves on when the first stops",
        .enabled(if: TestEnvironment.shouldRunStoreTests, Comment(rawValue: TestEnvironment.storeSkipReason)))
    func workerLinkedToEveryReplica() async throws {
        try await ReplicaTenantTests.withTwoStores { first, second in
            let one = try await ServerFixture(sandboxesPerTenant: 3, sessions: first)
            let two = try await ServerFixture(sandboxesPerTenant: 3, sessions: second, sharing: one)
            let host = try await ServerFixture()
            do {
                try await Self.exercise(one, two, host: host)
            } catch {
                for fixture in [one, two, host] { await fixture.cleanUp() }
                throw error
            }
            for fixture in [one, two, host] { await fixture.cleanUp() }
        }
    }

    static func exercise(_ one: ServerFixture, _ two: ServerFixture, host: ServerFixture) async throws {
        // Tenants and worker tokens live in the store: added through one, seen by both.
        let acmeToken = try await one.server.tenants.add(Self.acme, groups: ["vpc"])
        let sessions = try #require(one.server.sessions)
        let workerToken = try await WorkerTokenRegistry(store: sessions, stateDirectory: one.state)
            .add(group: "vpc").token
        // The first replica's worker port is known before it starts: the worker dials it first,
        // and goes on with the second once the first has stopped.
        let firstPort = try WorkerLinkTests.freePort()
        // The second replica's heartbeats are slow, so that it has not heard of a sandbox the
        // first makes when the test asks it for that sandbox: it must ask the worker.
        let slow = WorkerLinkTests.settings {
            $0.fleet.heartbeat = .seconds(10)
            $0.fleet.grace = .seconds(60)
        }
        try await LiveServer.with(two, configure: { $0.workers = slow }) { liveTwo in
            let fleetTwo = try #require(liveTwo.server.fleet)
            try await WorkerLinkTests.withWorker(host, url: "http://127.0.0.1:\(firstPort)", token: workerToken) { _ in
                let left = Mutex<[SandboxID]>([])
                try await LiveServer.with(
                    one,
                    configure: { $0.workers = WorkerLinkTests.settings { $0.listen = "127.0.0.1:\(firstPort)" } }
                ) { liveOne in
                    let kept = try await Self.bothReplicas(liveOne, liveTwo, acmeToken: acmeToken)
                    left.withLock { $0 = kept }
                }
                let kept = left.withLock { $0 }
                // The first replica stopped: the worker's link to the second stays, and the
                // second serves every sandbox on it.
                let client = try CorralClient(
                    endpoint: try HTTPEndpoint(parsing: "http://127.0.0.1:\(liveTwo.port)"), token: acmeToken)
                defer { client.shutdown() }
                #expect(try await client.listSandboxes().map(\.id).sorted() == kept.sorted())
                let tool = try await client.execute(
                    try #require(kept.first), tool: "bash", input: .object(["command": .string("echo still here")]))
                #expect(tool.text.contains("still here"))
                #expect(fleetTwo.summaries().first { $0.name == "w1" }?.state == "connected")
            }
        }
    }

    /// Both replicas up, the worker dialled the first: returns the sandboxes left on the worker.
    static func bothReplicas(_ liveOne: LiveServer, _ liveTwo: LiveServer, acmeToken: String) async throws
        -> [SandboxID]
    {
        let fleetOne = try #require(liveOne.server.fleet)
        let fleetTwo = try #require(liveTwo.server.fleet)
        // The second replica learns the worker from the worker's own link to it, which the
        // worker opened when the first told it of the second.
        _ = try await WorkerLinkTests.waitConnected(fleetOne, "w1")
        _ = try await WorkerLinkTests.waitConnected(fleetTwo, "w1")
        #expect(fleetOne.replica != fleetTwo.replica)

        let clientOne = try CorralClient(
            endpoint: try HTTPEndpoint(parsing: "http://127.0.0.1:\(liveOne.port)"), token: acmeToken)
        let clientTwo = try CorralClient(
            endpoint: try HTTPEndpoint(parsing: "http://127.0.0.1:\(liveTwo.port)"), token: acmeToken)
        defer {
            clientOne.shutdown()
            clientTwo.shutdown()
        }
        // Made through one, used through the other at once, before any heartbeat can have told
        // the second of it (it asks the worker).
        let made = try await clientOne.createSandbox(CreateSandboxRequest())
        #expect(try await clientTwo.sandbox(made.id).worker == "w1")
        // What the second did there: it asked the worker, which answers for its own sandboxes only.
        guard case .worker(let name, _) = await fleetTwo.locate(made.id, tenant: Self.acme) else {
            Issue.record("the worker did not answer for \(made.id)")
            return []
        }
        #expect(name == "w1")
        let unknown = await fleetTwo.locate(SandboxID(unchecked: "sb-0123456789ab"), tenant: Self.acme)
        #expect(unknown == nil)
        let others = await fleetTwo.locate(made.id, tenant: TenantID(unchecked: "tenant-a"))
        #expect(others == nil)
        let output = Mutex("")
        let status = try await clientTwo.exec(made.id, SandboxCommand(["sh", "-c", "echo across"])) { _, bytes in
            output.withLock { $0 += String(decoding: bytes, as: UTF8.self) }
        }
        #expect(status.exitCode == 0)
        #expect(output.withLock { $0 }.contains("across"))
        // Each replica lists it once.
        #expect(try await clientOne.listSandboxes().map(\.id) == [made.id])
        #expect(try await clientTwo.listSandboxes().map(\.id) == [made.id])

        // The quota (3) counts the worker's sandboxes once, though both replicas count that
        // worker and publish its counts: two more fit, through the second; a fourth does not,
        // through either.
        let second = try await clientTwo.createSandbox(CreateSandboxRequest())
        let third = try await clientTwo.createSandbox(CreateSandboxRequest())
        for client in [clientOne, clientTwo] {
            let refused = await #expect(throws: CorralError.self) {
                try await client.createSandbox(CreateSandboxRequest())
            }
            #expect(refused?.code == .quotaExceeded, "\(String(describing: refused))")
        }
        // Removed through the replica that did not make it: gone for both, and room again.
        try await clientTwo.removeSandbox(made.id)
        let gone = await #expect(throws: CorralError.self) { try await clientOne.sandbox(made.id) }
        #expect(gone?.code == .notFound, "\(String(describing: gone))")
        // Room at once: the quota asks the worker, not a heartbeat that may predate the removal.
        let fourth = try await clientOne.createSandbox(CreateSandboxRequest())
        try await clientOne.removeSandbox(fourth.id)
        return [second.id, third.id]
    }
}

extension ReplicaWorkerTests {
    @Test(
        "a worker lost here that another replica still hears keeps its sandboxes (503, try again); once no replica hears it, they are given up"
    )
    func heardElsewhereIsNotGivenUp() async throws {
        try await ServerFixture.with { control in
            try await ServerFixture.with { host in
                let acmeToken = try await control.server.tenants.add(Self.acme, groups: ["vpc"])
                let workerToken = try await WorkerTokenRegistry(stateDirectory: control.state).add(group: "vpc").token
                let settings = WorkerLinkTests.settings { $0.fleet.grace = .seconds(6) }
                try await LiveServer.with(control, configure: { $0.workers = settings }) { live in
                    let fleet = try #require(live.server.fleet)
                    let client = try CorralClient(
                        endpoint: try HTTPEndpoint(parsing: "http://127.0.0.1:\(live.port)"), token: acmeToken)
                    defer { client.shutdown() }
                    var made: SandboxID?
                    try await WorkerLinkTests.withWorker(host, url: try #require(live.workerURL), token: workerToken) {
                        _ in
                        _ = try await WorkerLinkTests.waitConnected(fleet, "w1")
                        made = try await client.createSandbox(CreateSandboxRequest()).id
                    }
                    let id = try #require(made)
                    // Another replica's directory entry says its link to w1 is up.
                    fleet.took(directory: [
                        .init(id: fleet.replica, url: nil, workers: []),
                        .init(id: "elsewhere", url: nil, workers: ["w1"]),
                    ])
                    try await WorkerLinkTests.waitLost(fleet, "w1")
                    let down = await #expect(throws: CorralError.self) { try await client.sandbox(id) }
                    #expect(down?.message.contains("is down") == true, "\(String(describing: down))")
                    #expect(!fleet.isAbandoned(id))
                    // No replica hears it any more: given up, as with one control plane.
                    fleet.took(directory: [.init(id: fleet.replica, url: nil, workers: [])])
                    let lost = await #expect(throws: CorralError.self) { try await client.sandbox(id) }
                    #expect(lost?.message.contains("which is lost") == true, "\(String(describing: lost))")
                    #expect(fleet.isAbandoned(id))
                }
            }
        }
    }
}

/// The replicas' directory and the worker's links to the replicas, without an engine.
@Suite("Replica directory and a worker's links to replicas")
struct ReplicaDirectoryTests {
    @Test(
        "the URL a replica gives workers: advertise, else its own address unless a wildcard; plain http on loopback only"
    )
    func workerURL() throws {
        #expect(
            try ReplicaDirectory.workerURL(advertise: nil, bound: "http://127.0.0.1:7443") == "http://127.0.0.1:7443")
        #expect(try ReplicaDirectory.workerURL(advertise: nil, bound: "https://0.0.0.0:7443") == nil)
        #expect(try ReplicaDirectory.workerURL(advertise: nil, bound: "https://[::]:7443") == nil)
        #expect(
            try ReplicaDirectory.workerURL(advertise: "https://cp-1.internal:7443", bound: "https://0.0.0.0:7443")
                == "https://cp-1.internal:7443")
        for bad in ["http://cp-1.internal:7443", "cp-1:7443", "https://cp-1.internal", "ftp://h:1"] {
            let error = #expect(throws: CorralError.self) {
                try ReplicaDirectory.workerURL(advertise: bad, bound: "https://0.0.0.0:7443")
            }
            #expect(error?.message.contains("[workers] advertise") == true, "\(bad): \(String(describing: error))")
        }
    }

    @Test("each replica's entry replaces its last; stale entries are left out, and dropped later; a withdrawn one goes")
    func directory() async throws {
        try await withTemporaryDirectory { root in
            let list = LockedJSONFile<ReplicaDirectory.Entry>(
                file: root.appendingPathComponent("replicas.json"), what: "replicas")
            let directory = ReplicaDirectory(list: list, freshWithin: .seconds(10))
            let now = Date()
            _ = try await directory.publish(.init(id: "a", url: "http://127.0.0.1:1", workers: ["w1"], seen: now))
            _ = try await directory.publish(.init(id: "old", url: nil, workers: [], seen: now - 30))
            _ = try await directory.publish(.init(id: "gone", url: nil, workers: [], seen: now - 300))
            let fresh = try await directory.publish(.init(id: "b", url: "http://127.0.0.1:2", workers: [], seen: now))
            #expect(fresh.map(\.id) == ["a", "b"])
            #expect(try await list.load().map(\.id) == ["a", "b", "old"])
            let again = try await directory.publish(.init(id: "a", url: "http://127.0.0.1:3", workers: [], seen: now))
            #expect(again.first { $0.id == "a" }?.url == "http://127.0.0.1:3")
            try await directory.withdraw(id: "b")
            #expect(try await list.load().map(\.id) == ["a", "old"])
        }
    }

    @Test(
        "a worker's links: the door waits while a link is up; a told replica is dialled once, and waits while linked through the door"
    )
    func links() {
        let links = ReplicaLinks()
        #expect(!links.anyUp)
        links.up(replica: "a", via: ReplicaLinks.door)
        #expect(links.anyUp)
        let told = [
            WorkerReplica(id: "a", url: "http://127.0.0.1:1"), WorkerReplica(id: "b", url: "http://127.0.0.1:2"),
        ]
        links.told(told, via: ReplicaLinks.door)
        #expect(links.toDial() == ["http://127.0.0.1:1", "http://127.0.0.1:2"])
        #expect(links.toDial().isEmpty)
        #expect(links.isLinkedElsewhere("http://127.0.0.1:1"))
        #expect(!links.isLinkedElsewhere("http://127.0.0.1:2"))
        links.up(replica: "b", via: "http://127.0.0.1:2")
        links.told(told, via: "http://127.0.0.1:2")
        // The door's link ends: a's own loop may dial it now; both are still told of by b.
        links.down(via: ReplicaLinks.door)
        #expect(!links.isLinkedElsewhere("http://127.0.0.1:1"))
        #expect(links.isListed("http://127.0.0.1:1"))
        links.down(via: "http://127.0.0.1:2")
        #expect(!links.isListed("http://127.0.0.1:1"))
        #expect(!links.anyUp)
        links.stoppedDialling("http://127.0.0.1:2")
        links.told(told, via: ReplicaLinks.door)
        #expect(links.toDial() == ["http://127.0.0.1:2"])
    }

    @Test("a loop waiting on the links wakes when one goes down, at once if it already did, and when cancelled")
    func linkChanges() async {
        let links = ReplicaLinks()
        links.up(replica: "a", via: ReplicaLinks.door)
        // Read, then changed before the wait began: the wait returns at once.
        let before = links.version
        links.down(via: ReplicaLinks.door)
        await links.changed(after: before)
        // A wait that begins first is woken by the change.
        links.up(replica: "a", via: ReplicaLinks.door)
        let seen = links.version
        let woken = Task { await links.changed(after: seen) }
        while links.waiting == 0 { await Task.yield() }
        links.down(via: ReplicaLinks.door)
        await woken.value
        #expect(links.version > seen)
        // No change: cancelling ends the wait.
        let idle = Task { await links.changed(after: links.version) }
        idle.cancel()
        await idle.value
    }
}
