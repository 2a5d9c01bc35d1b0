import CorralCore
import Foundation
import Logging
import TestSupport
import Testing

@testable import CorralSession
@testable import CorralSessionPostgres

/// The stores the conformance tests run on: the file store always, PostgreSQL when
/// CORRAL_TEST_STORE_URL names one (or when CI demands it, to fail without it).
enum StoreKind: String, Sendable, CustomTestStringConvertible {
    case file
    case postgres

    var testDescription: String { rawValue }

    static let all: [StoreKind] = {
        if TestEnvironment.shouldRunStoreTests { return [.file, .postgres] }
        print("note: \(TestEnvironment.storeSkipReason)")
        return [.file]
    }()
}

/// What a conformance test gets: a store of one kind over fresh space (a directory, or a
/// PostgreSQL schema of its own), and a way to open a second, independent instance on the
/// same space, as another process would.
struct StoreFixture: Sendable {
    let kind: StoreKind
    let directory: URL
    let url: PostgresStoreURL?
    let maxEventBytes: Int?
    let segmentBytes: UInt64

    func open() async throws -> any SessionStore {
        switch kind {
        case .file:
            return makeStore(directory, segmentBytes: segmentBytes, maxEventBytes: maxEventBytes)
        case .postgres:
            guard let url else { throw CorralError(.internalError, "no store URL") }
            var configuration = PostgresSessionStore.Configuration(url: url)
            if let maxEventBytes { configuration.maxEventBytes = maxEventBytes }
            return try await PostgresSessionStore.connect(configuration, logger: testLogger)
        }
    }
}

let testLogger: Logger = {
    var logger = Logger(label: "corral-session-tests")
    logger.logLevel = .warning
    return logger
}()

/// A PostgreSQL URL for a fresh schema of this test's own, so that tests running at once do
/// not see each other's sessions. Records a failure and returns nil when there is none.
func testStoreURL(schema: String = "t_\(UInt64.random(in: 0...UInt64.max))") throws -> PostgresStoreURL? {
    guard let text = TestEnvironment.storeURL else {
        Issue.record(Comment(rawValue: TestEnvironment.storeMissingFailure))
        return nil
    }
    var url = try PostgresStoreURL(parsing: text)
    url.schema = schema
    return url
}

/// Runs `body` with a store of `kind` and its fixture; drops the PostgreSQL schema after.
func withStore(
    _ kind: StoreKind, segmentBytes: UInt64 = 64 << 20, maxEventBytes: Int? = nil,
    _ body: (any SessionStore, StoreFixture) async throws -> Void
) async throws {
    try await withTemporaryDirectory { directory in
        var url: PostgresStoreURL?
        if kind == .postgres {
            guard let fresh = try testStoreURL() else { return }
            url = fresh
        }
        let fixture = StoreFixture(
            kind: kind, directory: directory, url: url, maxEventBytes: maxEventBytes, segmentBytes: segmentBytes)
        let store = try await fixture.open()
        do {
            try await body(store, fixture)
        } catch {
            await cleanUp(store)
            throw error
        }
        await cleanUp(store)
    }
}

private func cleanUp(_ store: any SessionStore) async {
    guard let postgres = store as? PostgresSessionStore else { return }
    try? await postgres.dropSchema()
    await postgres.shutdown()
}

extension SessionStore {
    /// Closes a PostgreSQL store's connections; nothing for the file store.
    func close() async {
        if let postgres = self as? PostgresSessionStore { await postgres.shutdown() }
    }
}

/// How much a session holds, in a form that changes whenever anything is written to it: the
/// bytes of its first segment file, or its rows' bytes in PostgreSQL.
func storedSize(_ store: any SessionStore, _ id: SessionID) async throws -> Int {
    if let store = store as? FileSessionStore {
        return try fileBytes(sessionPath(store, id, LogFormat.segmentName(1))).count
    }
    guard let store = store as? PostgresSessionStore else { return 0 }
    return try await store.storedBytes(id)
}
