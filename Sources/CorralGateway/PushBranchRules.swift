import CorralCore
import CorralPolicy

/// Which branches a tenant's sandboxes may push besides their own (`corral/<sandbox id>`): the
/// operator's corral.toml `[gateway.push_branches]`, tenant name → branch names.
///
/// A name is exact (`main`) or a prefix ending in `*` (`release/*` matches `release/1.2`). A
/// tenant the table does not name pushes only its sandboxes' own branches. The local tenant is
/// the operator on the host and may push any branch its grant names.
public struct PushBranchRules: Sendable, Hashable {
    public private(set) var branches: [TenantID: [String]]

    /// No tenant may push more than its sandboxes' own branches.
    public init() {
        branches = [:]
    }

    /// Checks every pattern; an empty one, a `*` anywhere but at the end, or a name git would
    /// refuse is an error naming the tenant.
    public init(_ branches: [TenantID: [String]]) throws {
        for (tenant, patterns) in branches {
            for pattern in patterns { try Self.checkPattern(pattern, tenant: tenant) }
        }
        self.branches = branches
    }

    /// Whether `tenant`'s sandbox `sandbox` may push `branch`. Before the sandbox's id is known
    /// (`sandbox` nil), only the table can allow a branch that was named: a request cannot know
    /// the id it will get, so it asks for its own branch by naming none.
    public func allows(tenant: TenantID, branch: String, sandbox: SandboxID?) -> Bool {
        if tenant == .local { return true }
        if let sandbox, branch == GitGrant.defaultBranch(for: sandbox) { return true }
        return (branches[tenant] ?? []).contains { Self.matches($0, branch) }
    }

    /// Throws `.permissionDenied` naming the rule when `allows` says no.
    public func check(tenant: TenantID, branch: String, sandbox: SandboxID?) throws {
        guard !allows(tenant: tenant, branch: branch, sandbox: sandbox) else { return }
        throw CorralError(.permissionDenied, refusal(tenant: tenant, branch: branch, sandbox: sandbox))
    }

    /// Why `branch` is not pushable for `tenant`.
    func refusal(tenant: TenantID, branch: String, sandbox: SandboxID?) -> String {
        let own =
            sandbox.map { GitGrant.defaultBranch(for: $0) } ?? "corral/<sandbox id>, which it gets by naming no branch"
        let listed = branches[tenant] ?? []
        return
            "tenant \(tenant) may push only its sandbox's own branch (\(own))\(listed.isEmpty ? "" : " and \(listed.joined(separator: ", "))"), not \(branch): the operator's corral.toml [gateway.push_branches] decides which other branches a tenant may push"
    }

    static func matches(_ pattern: String, _ branch: String) -> Bool {
        if pattern.hasSuffix("*") {
            let prefix = pattern.dropLast()
            return branch.hasPrefix(prefix) && branch.count > prefix.count
        }
        return pattern == branch
    }

    static func checkPattern(_ pattern: String, tenant: TenantID) throws {
        func fail(_ why: String) -> CorralError {
            CorralError.invalidArgument(
                "invalid pushable branch '\(pattern.prefix(100))' for tenant \(tenant): \(why)",
                hint: "write a branch name (main) or a prefix ending in * (release/*)")
        }
        let name = pattern.hasSuffix("*") ? String(pattern.dropLast()) : pattern
        guard !pattern.isEmpty else { throw fail("it is empty") }
        guard !name.contains("*") else { throw fail("'*' may only end it") }
        guard pattern.utf8.count <= 200, pattern.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw fail("only visible ASCII characters, at most 200")
        }
        for forbidden in ["..", "@{", "//", "~", "^", ":", "?", "[", "\\"] where name.contains(forbidden) {
            throw fail("it may not contain '\(forbidden)'")
        }
        guard !name.hasPrefix("-"), !name.hasPrefix("/"), !name.hasPrefix("refs/") else {
            throw fail("name the branch without refs/heads/, not starting with '-' or '/'")
        }
    }
}
