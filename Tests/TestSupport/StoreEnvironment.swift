import Foundation
import Testing

/// The PostgreSQL the store tests use: `CORRAL_TEST_STORE_URL` (`eval "$(scripts/postgres.sh env)"`
/// sets it). PostgreSQL cases run when it is set; when it is not, they fail under
/// `CORRAL_REQUIRE_ENGINE=1` (CI) and are left out with a printed note otherwise, as engine
/// tests are.
extension TestEnvironment {
    public static var storeURL: String? {
        ProcessInfo.processInfo.environment["CORRAL_TEST_STORE_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Whether PostgreSQL cases should run: a URL is set, or CI demands them (and then a
    /// missing URL is a failure).
    public static var shouldRunStoreTests: Bool { storeURL != nil || engineRequired }

    public static var storeSkipReason: String {
        "CORRAL_TEST_STORE_URL is not set, so the PostgreSQL store cases are left out; run `scripts/postgres.sh up` and `eval \"$(scripts/postgres.sh env)\"` (set CORRAL_REQUIRE_ENGINE=1 to make this a failure)"
    }

    /// `storeURL` with a schema of its own (`?schema=t_…`), so that a test's tables are apart
    /// from every other test's; records the missing-URL failure and returns nil when there is
    /// none.
    public static func freshStoreURL() -> String? {
        guard let text = storeURL else {
            Issue.record(Comment(rawValue: storeMissingFailure))
            return nil
        }
        return text + (text.contains("?") ? "&" : "?") + "schema=t_\(UInt64.random(in: 0...UInt64.max))"
    }

    public static var storeMissingFailure: String {
        "CORRAL_REQUIRE_ENGINE=1 but CORRAL_TEST_STORE_URL is not set: run `scripts/postgres.sh up` and `eval \"$(scripts/postgres.sh env)\"` first"
    }

    /// The repository's root, for tests that run its scripts.
    public static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }
}
