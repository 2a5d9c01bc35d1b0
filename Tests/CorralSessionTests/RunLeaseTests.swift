import CorralCore
import Foundation
import TestSupport
import Testing

@testable import CorralSession
@testable import CorralSessionPostgres

/// The run leases replicas share through PostgreSQL (`RunLeases`): claims, renewals, stops and
/// take-overs, against a real database, with the expiry on its clock.
@Suite(
    "Run leases in PostgreSQL",
    .enabled(if: TestEnvironment.shouldRunStoreTests, Comment(rawValue: TestEnvironment.storeSkipReason)))
struct RunLeaseTests {
    static func withLeases(_ body: (PostgresSessionStore, PostgresRunLeases, SessionID) async throws -> Void)
        async throws
    {
        guard let url = try testStoreURL() else { return }
        let store = try await PostgresSessionStore.connect(.init(url: url), logger: testLogger)
        do {
            let session = try await store.create(id: nil, tenant: .local, metadata: [:]).id
            try await body(store, store.runLeases, session)
        } catch {
            try? await store.dropSchema()
            await store.shutdown()
            throw error
        }
        try? await store.dropSchema()
        await store.shutdown()
    }

    @Test("a live lease is held against others; its owner renews it; a release lets the next claim in")
    func claimRenewRelease() async throws {
        try await Self.withLeases { _, leases, session in
            guard
                case .granted(let epoch) = try await leases.claim(
                    session, tenant: .local, owner: "a", ttl: .seconds(30))
            else { return #expect(Bool(false), "the first claim is granted") }
            #expect(try await leases.claim(session, tenant: .local, owner: "b", ttl: .seconds(30)) == .held(by: "a"))
            #expect(try await leases.renew(session, owner: "a", epoch: epoch, ttl: .seconds(30)) == .renewed)
            #expect(try await leases.renew(session, owner: "b", epoch: epoch, ttl: .seconds(30)) == .lost)
            #expect(try await leases.renew(session, owner: "a", epoch: epoch + 1, ttl: .seconds(30)) == .lost)
            // A stale owner's release does nothing.
            try await leases.release(session, owner: "b", epoch: epoch, handOver: false)
            #expect(try await leases.lease(session)?.state == .running)
            try await leases.release(session, owner: "a", epoch: epoch, handOver: false)
            #expect(try await leases.lease(session)?.state == .ended)
            #expect(
                try await leases.claimExpired(owner: "c", ttl: .seconds(30), limit: 8).isEmpty,
                "an ended run is not taken over")
            guard
                case .granted(let next) = try await leases.claim(session, tenant: .local, owner: "b", ttl: .seconds(30))
            else { return #expect(Bool(false), "a claim after the release is granted") }
            #expect(next == epoch + 1)
        }
    }

    @Test("a stop asked through any replica reaches the owner at its renewal; an owner that is gone just ends")
    func stops() async throws {
        try await Self.withLeases { store, leases, session in
            guard
                case .granted(let epoch) = try await leases.claim(
                    session, tenant: .local, owner: "a", ttl: .seconds(30))
            else { return #expect(Bool(false), "granted") }
            #expect(try await leases.requestStop(session) == "a")
            #expect(try await leases.renew(session, owner: "a", epoch: epoch, ttl: .seconds(30)) == .stopRequested)
            try await leases.release(session, owner: "a", epoch: epoch, handOver: false)
            #expect(try await leases.requestStop(session) == nil, "nothing runs")

            // An owner that stopped renewing: the stop ends the run, and nobody takes it over.
            let other = try await store.create(id: nil, tenant: .local, metadata: [:]).id
            _ = try await leases.claim(other, tenant: .local, owner: "a", ttl: .milliseconds(1))
            try await Task.sleep(for: .milliseconds(20))
            #expect(try await leases.requestStop(other) == nil)
            #expect(try await leases.lease(other)?.state == .ended)
            #expect(try await leases.claimExpired(owner: "b", ttl: .seconds(30), limit: 8).isEmpty)
        }
    }

    @Test("expired runs are taken over once each, however many replicas ask at once; a hand-over is taken at once")
    func takeOver() async throws {
        try await Self.withLeases { store, leases, first in
            var sessions = [first]
            for _ in 0..<11 { sessions.append(try await store.create(id: nil, tenant: .local, metadata: [:]).id) }
            for session in sessions {
                _ = try await leases.claim(session, tenant: .local, owner: "dead", ttl: .milliseconds(1))
            }
            try await Task.sleep(for: .milliseconds(20))
            let claimed = try await withThrowingTaskGroup(of: [ClaimedRun].self) { group in
                for replica in 0..<4 {
                    group.addTask {
                        var mine: [ClaimedRun] = []
                        while true {
                            let batch = try await leases.claimExpired(owner: "r\(replica)", ttl: .seconds(30), limit: 2)
                            if batch.isEmpty { return mine }
                            mine += batch
                        }
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(claimed.count == sessions.count, "\(claimed)")
            #expect(Set(claimed.map(\.session)) == Set(sessions))
            #expect(claimed.allSatisfy { $0.epoch == 2 })
            // The dead owner is fenced.
            #expect(try await leases.renew(first, owner: "dead", epoch: 1, ttl: .seconds(30)) == .lost)

            // A replica going away hands its run over: the next look takes it, with no wait.
            let taken = try #require(claimed.first { $0.session == first })
            let owner = try #require(try await leases.lease(first)?.owner)
            try await leases.release(first, owner: owner, epoch: taken.epoch, handOver: true)
            let again = try await leases.claimExpired(owner: "next", ttl: .seconds(30), limit: 8)
            #expect(again.map(\.session) == [first] && again.first?.epoch == taken.epoch + 1)

            // A deleted session takes its lease with it: its owner is told at its renewal.
            try await store.delete(first)
            #expect(try await leases.renew(first, owner: "next", epoch: taken.epoch + 1, ttl: .seconds(30)) == .lost)
        }
    }

    // What a replica's quota check adds to its own count (`SandboxTallies`): the others'
    // published counts, while fresh, on the database's clock.
    @Test("sandbox counts: each replica's own, the others' summed while fresh, a refresh replaces them")
    func sandboxTallies() async throws {
        try await Self.withLeases { store, _, _ in
            let tallies = store.sandboxTallies
            let acme = TenantID(unchecked: "acme")
            let globex = TenantID(unchecked: "globex")
            try await tallies.publish(replica: "a", tenant: acme, count: 2)
            try await tallies.publish(replica: "b", tenant: acme, count: 3)
            try await tallies.publish(replica: "b", tenant: globex, count: 1)
            #expect(try await tallies.othersCount(tenant: acme, excluding: "a", freshWithin: .seconds(30)) == 3)
            #expect(try await tallies.othersCount(tenant: acme, excluding: "b", freshWithin: .seconds(30)) == 2)
            #expect(try await tallies.othersCount(tenant: acme, excluding: "c", freshWithin: .seconds(30)) == 5)
            #expect(try await tallies.othersCount(tenant: globex, excluding: "a", freshWithin: .seconds(30)) == 1)
            // b's refresh: acme down to 1, globex gone (not named).
            try await tallies.refresh(replica: "b", counts: [acme: 1])
            #expect(try await tallies.othersCount(tenant: acme, excluding: "a", freshWithin: .seconds(30)) == 1)
            #expect(try await tallies.othersCount(tenant: globex, excluding: "a", freshWithin: .seconds(30)) == 0)
            // Counts older than the window stop counting: replicas that stopped refreshing (aged
            // on the database's clock, which is the one freshness is kept by).
            try await store.execute("UPDATE sandbox_tallies SET seen_at = now() - interval '1 hour'")
            #expect(try await tallies.othersCount(tenant: acme, excluding: "c", freshWithin: .seconds(600)) == 0)
            // A publish marks all of that replica's counts fresh again, and only that replica's.
            try await tallies.publish(replica: "a", tenant: globex, count: 4)
            #expect(try await tallies.othersCount(tenant: acme, excluding: "c", freshWithin: .seconds(600)) == 2)
            #expect(try await tallies.othersCount(tenant: globex, excluding: "c", freshWithin: .seconds(600)) == 4)
            try await tallies.refresh(replica: "a", counts: [:])
            #expect(try await tallies.othersCount(tenant: globex, excluding: "c", freshWithin: .seconds(30)) == 0)
        }
    }
}
