import CorralSessionPostgres
import Logging

/// Runs `body` with a store connected to `url` (a schema of the test's own), then drops the
/// schema and closes the store, whether `body` throws or not.
func withSchema<T>(
    _ url: String, logger: Logger, _ body: (PostgresSessionStore) async throws -> T
) async throws -> T {
    let store = try await PostgresSessionStore.connect(url: url, logger: logger)
    do {
        let value = try await body(store)
        try? await store.dropSchema()
        await store.shutdown()
        return value
    } catch {
        try? await store.dropSchema()
        await store.shutdown()
        throw error
    }
}
