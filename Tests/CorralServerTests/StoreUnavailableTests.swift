import CorralCore
import CorralSessionPostgres
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import TestSupport
import Testing

@Suite("The API while its PostgreSQL store is down", .engine)
struct StoreUnavailableTests {
    @Test(
        "a request that needs the store is a 503 with Retry-After while the database is down, and works again once it is back",
        .enabled(if: TestEnvironment.shouldRunStoreTests, Comment(rawValue: TestEnvironment.storeSkipReason)),
        .timeLimit(.minutes(3)))
    func unavailableThenBack() async throws {
        guard TestEnvironment.storeURL != nil else {
            Issue.record(Comment(rawValue: TestEnvironment.storeMissingFailure))
            return
        }
        let cluster = try PrivateCluster()
        defer { cluster.remove() }
        let text = try await runOnThread {
            try cluster.run("up")
            return try cluster.urlText()
        }
        var configuration = PostgresSessionStore.Configuration(url: try PostgresStoreURL(parsing: text))
        configuration.connectTimeout = .seconds(2)
        let store = try await retrying(for: .seconds(30)) {
            try await PostgresSessionStore.connect(configuration, logger: Logger(label: "corral.test"))
        }
        do {
            try await ServerFixture.with(sessions: store) { fixture in
                try await fixture.test { client in
                    let created = try await client.call(.post, "/v1/sessions", token: fixture.tokenA, json: "{}")
                    #expect(created.status.code == 201, "\(created.text)")

                    _ = try await runOnThread { try cluster.run("down") }
                    let down = try await client.call(.post, "/v1/sessions", token: fixture.tokenA, json: "{}")
                    #expect(down.status.code == 503, "\(down.text)")
                    #expect(down.headers[.retryAfter] == "2")
                    #expect(down.text.contains("unavailable") && !down.text.contains("SELECT"), "\(down.text)")

                    _ = try await runOnThread { try cluster.run("up") }
                    // Recovery is seen only by asking: the same bounded retry as a first connection.
                    let status = try? await retrying(for: .seconds(60)) {
                        let answer = try await client.call(.post, "/v1/sessions", token: fixture.tokenA, json: "{}")
                        guard answer.status.code == 201 else {
                            throw CorralError(.unavailable, "still \(answer.status.code): \(answer.text)")
                        }
                        return 201
                    }
                    #expect(status == 201, "the API did not recover once the database was back")
                }
            }
        } catch {
            await store.shutdown()
            throw error
        }
        await store.shutdown()
    }
}
