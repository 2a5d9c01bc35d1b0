import CorralCore
import CorralGateway
import CorralSession
import CorralSessionPostgres
import Foundation
import Logging

/// Which session store a command or the service uses: `CORRAL_STORE_URL`, else corral.toml's
/// `[store] url`, else the files under `<state>/sessions` (the default). Everything that
/// touches sessions opens its store here, so that all of it agrees.
public enum SessionStoreSelection {
    /// The store URL in force, nil for the files. An empty `CORRAL_STORE_URL` means the files,
    /// whatever corral.toml says.
    public static func url(configuration: CorralConfiguration?, environment: [String: String]) -> String? {
        if let named = environment["CORRAL_STORE_URL"] { return named.isEmpty ? nil : named }
        return configuration?.store.url
    }

    /// Opens the store: connects and migrates for PostgreSQL (a wrong URL, password or a
    /// database that is down is one line naming the URL without its password).
    public static func open(
        configuration: CorralConfiguration?, environment: [String: String], stateDirectory: URL, logger: Logger
    ) async throws -> any SessionStore {
        guard let text = url(configuration: configuration, environment: environment) else {
            return FileSessionStore(directory: stateDirectory.appendingPathComponent("sessions", isDirectory: true))
        }
        let url: PostgresStoreURL
        do {
            url = try PostgresStoreURL(parsing: text)
        } catch let error as CorralError {
            let origin = environment["CORRAL_STORE_URL"] != nil ? "CORRAL_STORE_URL" : "[store] url"
            throw CorralError(.invalidArgument, "\(origin): \(error.message)", hint: error.hint)
        }
        return try await PostgresSessionStore.connect(.init(url: url), logger: logger)
    }

    /// Closes what `open` opened (a PostgreSQL store's connections).
    public static func close(_ store: any SessionStore) async {
        if let store = store as? PostgresSessionStore { await store.shutdown() }
    }

    /// The list `name` of the control plane's state (tenants, worker tokens) beside the store:
    /// a row of the PostgreSQL store, which every replica shares, or `<state>/<name>.json`
    /// with the files. `what` names the file in errors ("tenants file").
    package static func recordList<Element: Codable & Sendable>(
        _ name: String, what: String, store: any SessionStore, stateDirectory: URL
    ) -> any RecordList<Element> {
        if let store = store as? PostgresSessionStore { return store.recordList(name, of: Element.self) }
        return LockedJSONFile(file: stateDirectory.appendingPathComponent("\(name).json"), what: what)
    }

    /// The list `name` in the store the replicas share; nil for the files, which one process
    /// owns (what such a list is for, replicas finding each other, has no use there).
    package static func sharedRecordList<Element: Codable & Sendable>(
        _ name: String, store: (any SessionStore)?
    ) -> (any RecordList<Element>)? {
        (store as? PostgresSessionStore)?.recordList(name, of: Element.self)
    }

    /// Where the vault is kept beside the store: the PostgreSQL store's row `vault`, which every
    /// replica shares (each with the same key); nil for the files, `vault.sealed` in the state
    /// directory.
    package static func vaultStorage(_ store: (any SessionStore)?) -> (any VaultStorage)? {
        (store as? PostgresSessionStore).map { VaultRow(list: $0.recordList("vault", of: String.self)) }
    }

    /// Who runs which session, when replicas share the store: the PostgreSQL store's run
    /// leases; nil for the files, which one process owns.
    public static func runLeases(_ store: any SessionStore) -> (any RunLeases)? {
        (store as? PostgresSessionStore)?.runLeases
    }

    /// The replicas' sandbox counts, when replicas share the store: the PostgreSQL store's;
    /// nil for the files, which one process owns.
    public static func sandboxTallies(_ store: any SessionStore) -> (any SandboxTallies)? {
        (store as? PostgresSessionStore)?.sandboxTallies
    }

    /// Locks across the processes that share the store: PostgreSQL advisory locks; nil for
    /// the files, which one process owns.
    public static func sharedLocks(_ store: any SessionStore) -> (any SharedLocks)? {
        (store as? PostgresSessionStore)?.sharedLocks
    }

    /// The largest event the store takes.
    public static func maxEventBytes(_ store: any SessionStore) -> Int {
        if let store = store as? PostgresSessionStore { return store.configuration.maxEventBytes }
        if let store = store as? FileSessionStore { return store.configuration.maxEventBytes }
        return FileSessionStore.Configuration().maxEventBytes
    }
}
