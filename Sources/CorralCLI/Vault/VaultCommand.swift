import ArgumentParser
import CorralCore
import CorralGateway
import CorralService
import Foundation

/// `corral vault put|ls|rm`: credentials for git hosts, sealed on this host. Values go in
/// on standard input and never come out.
struct VaultCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vault",
        abstract: "Credentials for git hosts, one tenant's each, encrypted at rest; values are never printed.",
        subcommands: [VaultPutCommand.self, VaultListCommand.self, VaultRemoveCommand.self]
    )
}

extension GlobalOptions {
    /// Runs `body` with the vault beside the session store (`vault.sealed` in the state
    /// directory, or the PostgreSQL store's row); notes on stderr when a new key was made.
    func withVault<T>(_ body: (Vault) async throws -> T) async throws -> T {
        try await withSessionStore { store, state in
            let vault = try await Vault(
                configuration: Vault.Configuration(stateDirectory: state, environment: environment),
                storage: SessionStoreSelection.vaultStorage(store))
            if case .created(let url) = vault.keyOrigin {
                let note =
                    "corral: made a new vault key at \(url.path) (mode 0600); keep it safe, the vault cannot be read without it\n"
                FileHandle.standardError.write(Data(note.utf8))
            }
            return try await body(vault)
        }
    }
}
