import CorralCore
import Foundation
import TestSupport
import Testing

/// The `corral vault` commands, run as the built `corral` binary.
@Suite("corral vault")
struct VaultCommandTests {
    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    func corral(_ arguments: [String], stdin: String? = nil, stateDirectory: URL) async throws -> Run {
        let binary = try BuildProducts.path(of: "corral")
        return try await runOnThread {
            let output = try ChildProcess.run(
                binary, arguments,
                environment: [
                    "CORRAL_STATE_DIR": stateDirectory.path,
                    "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
                ], stdin: Data((stdin ?? "").utf8))
            return Run(
                status: output.status, stdout: String(decoding: output.stdout, as: UTF8.self),
                stderr: String(decoding: output.stderr, as: UTF8.self))
        }
    }

    @Test("put reads the value from stdin; ls and ls --json show names and scopes, never values")
    func putListRemove() async throws {
        try await withTemporaryDirectory { state in
            let token = "ghp_cli_\(UUID().uuidString)"
            let put = try await corral(
                ["vault", "put", "gh", "--scope", "github.com/apple"], stdin: token + "\n", stateDirectory: state)
            #expect(put.status == 0, "\(put.stderr)")
            #expect(put.stderr.contains("made a new vault key at \(state.path)/vault.key"))
            let second = try await corral(
                ["vault", "put", "ci", "--scope", "git.example.com", "--username", "bot"], stdin: "other-\(token)",
                stateDirectory: state)
            #expect(second.status == 0)
            #expect(!second.stderr.contains("made a new vault key"))

            let table = try await corral(["vault", "ls"], stateDirectory: state)
            #expect(table.status == 0)
            #expect(table.stdout.contains("gh"))
            #expect(table.stdout.contains("github.com/apple"))
            #expect(table.stdout.contains("bot"))

            let json = try await corral(["vault", "ls", "--json"], stateDirectory: state)
            #expect(json.status == 0)
            let rows = try JSONDecoder().decode([[String: String]].self, from: Data(json.stdout.utf8))
            #expect(rows.map { $0["name"] } == ["ci", "gh"])
            #expect(rows.map { $0["scope"] } == ["git.example.com", "github.com/apple"])

            for run in [put, second, table, json] {
                #expect(!run.stdout.contains(token))
                #expect(!run.stderr.contains(token))
            }

            let removed = try await corral(["vault", "rm", "gh"], stateDirectory: state)
            #expect(removed.status == 0)
            let missing = try await corral(["vault", "rm", "gh"], stateDirectory: state)
            #expect(missing.status != 0)
            #expect(missing.stderr.contains("corral: tenant local has no credential named 'gh'"))
        }
    }

    /// Security review finding 1: credentials belong to one tenant each.
    // `tenant add` asks the engine what an earlier tenant of the name left behind.
    @Test(
        "--tenant stores, lists and removes one tenant's credential; the same name may exist per tenant", .engine)
    func perTenant() async throws {
        try await withTemporaryDirectory { state in
            // A credential waits for no tenant: the tenant must exist first.
            let early = try await corral(
                ["vault", "put", "gh", "--scope", "github.com/acme", "--tenant", "tn-alpha"], stdin: "v",
                stateDirectory: state)
            #expect(early.status != 0)
            #expect(early.stderr.contains("no tenant 'tn-alpha'"), "\(early.stderr)")
            let reserved = try await corral(
                ["vault", "put", "gh", "--scope", "github.com/acme", "--tenant", "system"], stdin: "v",
                stateDirectory: state)
            #expect(reserved.status != 0)
            for tenant in ["tn-alpha", "tn-beta"] {
                let added = try await corral(["tenant", "add", tenant], stateDirectory: state)
                #expect(added.status == 0, "\(added.stderr)")
            }
            for tenant in ["tn-alpha", "tn-beta"] {
                let put = try await corral(
                    ["vault", "put", "gh", "--scope", "github.com/acme", "--tenant", tenant], stdin: "v-\(tenant)",
                    stateDirectory: state)
                #expect(put.status == 0, "\(put.stderr)")
                #expect(put.stdout.contains("(tenant \(tenant))"))
            }
            let local = try await corral(
                ["vault", "put", "gh", "--scope", "github.com"], stdin: "v", stateDirectory: state)
            #expect(local.status == 0)

            let table = try await corral(["vault", "ls"], stateDirectory: state)
            let lines = table.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
            #expect(lines.first == ["TENANT", "NAME", "SCOPE", "USERNAME"], "\(table.stdout)")
            #expect(
                lines.dropFirst().map { $0.prefix(2).joined(separator: "/") } == [
                    "local/gh", "tn-alpha/gh", "tn-beta/gh",
                ])

            let json = try await corral(["vault", "ls", "--json", "--tenant", "tn-beta"], stateDirectory: state)
            let rows = try JSONDecoder().decode([[String: String]].self, from: Data(json.stdout.utf8))
            #expect(rows.map { $0["tenant"] } == ["tn-beta"])

            let removed = try await corral(["vault", "rm", "gh", "--tenant", "tn-alpha"], stateDirectory: state)
            #expect(removed.status == 0, "\(removed.stderr)")
            let again = try await corral(["vault", "rm", "gh", "--tenant", "tn-alpha"], stateDirectory: state)
            #expect(again.status != 0)
            let left = try await corral(["vault", "ls", "--json"], stateDirectory: state)
            let remaining = try JSONDecoder().decode([[String: String]].self, from: Data(left.stdout.utf8))
            #expect(remaining.map { $0["tenant"] } == ["local", "tn-beta"])

            let bad = try await corral(
                ["vault", "put", "gh", "--scope", "github.com", "--tenant", "Not A Tenant"], stdin: "v",
                stateDirectory: state)
            #expect(bad.status != 0)
            #expect(bad.stderr.contains("invalid tenant id"), "\(bad.stderr)")
        }
    }

    @Test("put refuses an empty stdin and takes no value from its arguments")
    func valueOnlyFromStdin() async throws {
        try await withTemporaryDirectory { state in
            let empty = try await corral(
                ["vault", "put", "gh", "--scope", "github.com"], stdin: "", stateDirectory: state)
            #expect(empty.status != 0)
            #expect(empty.stderr.contains("no value on standard input"))
            let extra = try await corral(
                ["vault", "put", "gh", "ghp_in_argv", "--scope", "github.com"], stdin: "x", stateDirectory: state)
            #expect(extra.status != 0)
        }
    }

    @Test("a key file readable by others stops every vault command with the fix")
    func looseKey() async throws {
        try await withTemporaryDirectory { state in
            _ = try await corral(["vault", "put", "gh", "--scope", "github.com"], stdin: "v", stateDirectory: state)
            let keyFile = state.appendingPathComponent("vault.key").path
            try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: keyFile)
            let listed = try await corral(["vault", "ls"], stateDirectory: state)
            #expect(listed.status != 0)
            #expect(listed.stderr.contains(keyFile))
            #expect(listed.stderr.contains("hint: run `chmod 600 \(keyFile)`"))
        }
    }
}
