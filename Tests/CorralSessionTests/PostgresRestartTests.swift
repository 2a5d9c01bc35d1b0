import CorralCore
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import CorralSession
@testable import CorralSessionPostgres

extension PrivateCluster {
    func url() throws -> PostgresStoreURL { try PostgresStoreURL(parsing: try urlText()) }
}

/// What the writer of the restart test has done, shared with the test.
final class WriterProgress: Sendable {
    struct Progress: Sendable {
        var acked: [String] = []
        var failures: [CorralError] = []
    }
    let stop = Mutex(false)
    let progress = Mutex(Progress())
}

@Suite("The PostgreSQL store across a database restart")
struct PostgresRestartTests {
    @Test(
        "while the database restarts, appends fail as unavailable; afterwards they succeed, each acknowledged event stored once",
        .enabled(if: StoreKind.all.contains(.postgres), Comment(rawValue: TestEnvironment.storeSkipReason)),
        .timeLimit(.minutes(3)))
    func restartMidLoad() async throws {
        guard TestEnvironment.storeURL != nil else {
            Issue.record(Comment(rawValue: TestEnvironment.storeMissingFailure))
            return
        }
        let cluster = try PrivateCluster()
        defer { cluster.remove() }
        _ = try await onOwnThread { try cluster.run("up") }
        let url = try await onOwnThread { try cluster.url() }
        var configuration = PostgresSessionStore.Configuration(url: url)
        configuration.connectTimeout = .seconds(2)
        let store = try await retrying(for: .seconds(30)) {
            try await PostgresSessionStore.connect(configuration, logger: testLogger)
        }
        let id = try await store.create().id
        let lease = try await store.currentLease(id)

        let shared = WriterProgress()
        let writer = Task {
            var index = 0
            while !shared.stop.withLock({ $0 }) {
                let name = "e\(index)"
                do {
                    // A retry after a failure keeps the id: if the failed call landed after
                    // all, the store recognises it instead of storing it twice.
                    _ = try await store.append(id, [event(id: name)], lease: lease)
                    shared.progress.withLock { $0.acked.append(name) }
                    index += 1
                } catch {
                    let failure = error as? CorralError ?? CorralError(.internalError, "\(error)")
                    shared.progress.withLock { $0.failures.append(failure) }
                    try? await Task.sleep(for: .milliseconds(20))
                }
            }
        }
        func acked() -> Int { shared.progress.withLock { $0.acked.count } }
        while acked() < 20 { try await Task.sleep(for: .milliseconds(5)) }
        _ = try await onOwnThread { try cluster.run("down") }
        let failuresBefore = shared.progress.withLock { $0.failures.count }
        // An append in flight when the server went may take its connect timeout (2 s) to
        // fail, longer on a loaded machine: wait for the first failure, within a wide bound.
        let downDeadline = ContinuousClock.now + .seconds(30)
        while shared.progress.withLock({ $0.failures.count }) == failuresBefore, ContinuousClock.now < downDeadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(
            shared.progress.withLock { $0.failures.count } > failuresBefore,
            "no append failed while the database was down")
        _ = try await onOwnThread { try cluster.run("up") }
        let resumedAt = acked()
        let deadline = ContinuousClock.now + .seconds(60)
        while acked() < resumedAt + 20, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        shared.stop.withLock { $0 = true }
        _ = await writer.value

        let (ackedNames, failures) = shared.progress.withLock { ($0.acked, $0.failures) }
        #expect(ackedNames.count >= resumedAt + 20, "appends did not resume after the restart")
        #expect(!failures.isEmpty && failures.allSatisfy { $0.code == .unavailable || $0.code == .cancelled })
        // The HTTP API answers these with 503 and Retry-After.
        #expect(failures.filter { $0.code == .unavailable }.allSatisfy { $0.retryAfterSeconds != nil })
        let password = url.password ?? "\u{0}"
        for failure in failures {
            #expect(failure.message.contains("postgres://\(url.user)@127.0.0.1:\(url.port)/"))
            #expect(!"\(failure) \(failure.hint ?? "")".contains(password))
        }
        let events = try await store.all(id)
        #expect(events.map(\.seq) == Array(1...UInt64(events.count)))
        #expect(events.map(\.id.rawValue) == ackedNames)
        await store.shutdown()
    }
}
