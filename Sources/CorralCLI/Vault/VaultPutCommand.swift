import ArgumentParser
import CorralCore
import CorralGateway
import CorralServer
import Foundation

#if canImport(Glibc)
import Glibc
#endif

struct VaultPutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put",
        abstract: "Store a credential; the value is read from standard input, never from arguments.",
        discussion: """
            The scope says where the credential may be used: HOST, HOST/OWNER or HOST/OWNER/REPO. \
            When several match a repository, the most specific wins. A credential belongs to one \
            tenant (--tenant, default local): only that tenant's sandboxes are ever given it. \
            Example:
              printf '%s' "$TOKEN" | corral vault put gh-apple --scope github.com/apple --tenant acme
            """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The credential's name (letters, digits, '.', '_', '-').")
    var name: String

    @Option(name: .long, help: ArgumentHelp("Where it may be used: HOST[/OWNER[/REPO]].", valueName: "SCOPE"))
    var scope: String

    @Option(name: .long, help: "The user name sent with the token (default x-access-token).")
    var username: String = Vault.defaultUsername

    @Option(name: .long, help: "The tenant whose sandboxes may use it (default: local, the operator's).")
    var tenant: String = TenantID.local.rawValue

    func run() async throws {
        let owner = try TenantID(validating: tenant)
        if owner != .local {
            // A credential for a tenant that does not exist would wait for whoever is added
            // under that name next.
            try TenantRegistry.checkNotReserved(owner)
            let known = try await global.withSessionStore {
                try await TenantRegistry(store: $0, stateDirectory: $1).contains(owner)
            }
            guard known else {
                throw CorralError(
                    .notFound, "no tenant '\(owner)'", hint: "add it first with `corral tenant add \(owner)`")
            }
        }
        let parsedScope = try CredentialScope(parsing: scope)
        let secret = try SecretInput.readSecret(prompt: "value for \(name): ")
        try await global.withVault {
            try await $0.put(name: name, tenant: owner, scope: parsedScope, username: username, secret: secret)
        }
        print("stored \(name) for \(parsedScope) (tenant \(owner))")
    }
}

/// Reads a secret from standard input: one line from a terminal with echo off, or everything
/// from a pipe, without its final line break.
enum SecretInput {
    static func readSecret(prompt: String) throws -> VaultSecret {
        var bytes: [UInt8]
        if isatty(STDIN_FILENO) == 1 {
            FileHandle.standardError.write(Data(prompt.utf8))
            bytes = withEchoOff { readLine(strippingNewline: true).map { Array($0.utf8) } ?? [] }
            FileHandle.standardError.write(Data("\n".utf8))
        } else {
            bytes = Array(FileHandle.standardInput.readDataToEndOfFile())
        }
        if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        guard !bytes.isEmpty else {
            throw CorralError.invalidArgument(
                "no value on standard input",
                hint: "pipe the token in: printf '%s' \"$TOKEN\" | corral vault put NAME --scope HOST")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw CorralError.invalidArgument("the value on standard input is not UTF-8 text")
        }
        return VaultSecret(text)
    }

    private static func withEchoOff<T>(_ body: () -> T) -> T {
        var original = termios()
        guard tcgetattr(STDIN_FILENO, &original) == 0 else { return body() }
        var silent = original
        silent.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &silent)
        defer { tcsetattr(STDIN_FILENO, TCSAFLUSH, &original) }
        return body()
    }
}
