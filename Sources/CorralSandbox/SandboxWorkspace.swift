import CorralCore
import CorralPolicy

/// A git repository to clone into a sandbox's /workspace, through its gateway.
///
/// The clone's remote is the credential-free gateway URL
/// (`http://git.corral/HOST/OWNER/REPO.git`); the sandbox never holds the token. The work
/// tree is left on `branch`, made at `ref`, and with `write` the sandbox may push that branch
/// (fast-forward only) and no other.
public struct SandboxWorkspace: Sendable, Hashable, Codable {
    public var repository: GitRepository
    /// A branch, tag or commit of the repository; nil: the repository's default branch.
    public var ref: String?
    /// The branch the work tree is on; nil: `corral/<sandbox id>`.
    public var branch: String?
    /// Whether the sandbox may push `branch`.
    public var write: Bool

    public init(repository: GitRepository, ref: String? = nil, branch: String? = nil, write: Bool = false) {
        self.repository = repository
        self.ref = ref
        self.branch = branch
        self.write = write
    }

    /// Reads the repository from `HOST/OWNER/REPO`, `https://HOST/OWNER/REPO.git` or a gateway
    /// URL, and checks `ref` and `branch`.
    public init(repository: String, ref: String? = nil, branch: String? = nil, write: Bool = false) throws {
        self.init(repository: try GitRepository(parsing: repository), ref: ref, branch: branch, write: write)
        _ = try validated()
    }

    /// The branch the sandbox works on.
    public func branch(for sandbox: SandboxID) -> String { branch ?? GitGrant.defaultBranch(for: sandbox) }

    /// The grant the sandbox's gateway gets: read, or write to its own branch only.
    public func grant(for sandbox: SandboxID) -> GitGrant {
        GitGrant(repository: repository, access: write ? .write : .read, pushableBranches: [branch(for: sandbox)])
    }

    func validated() throws -> SandboxWorkspace {
        if let ref { try Self.checkRefName(ref, what: "ref") }
        if let branch { try Self.checkRefName(branch, what: "branch") }
        return self
    }

    /// Git's rules for a ref name (git check-ref-format), stricter where a shell or an option
    /// parser could be fooled: no leading '-', nothing but visible ASCII.
    static func checkRefName(_ name: String, what: String) throws {
        func fail(_ why: String) -> CorralError {
            CorralError.invalidArgument(
                "invalid \(what) '\(name.prefix(100))': \(why)",
                hint: what == "branch"
                    ? "name a branch such as agent/fix-tests" : "name a branch, a tag or a commit, such as main or v1.2"
            )
        }
        guard !name.isEmpty else { throw fail("it is empty") }
        guard name.utf8.count <= 200 else { throw fail("it is longer than 200 characters") }
        guard name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw fail("only visible ASCII characters, no spaces")
        }
        guard !name.hasPrefix("-") else { throw fail("it may not start with '-'") }
        for forbidden in ["..", "@{", "//", "~", "^", ":", "?", "*", "[", "\\"] where name.contains(forbidden) {
            throw fail("it may not contain '\(forbidden)'")
        }
        guard name != "@", !name.hasPrefix("/"), !name.hasSuffix("/"), !name.hasSuffix("."), !name.hasSuffix(".lock")
        else {
            throw fail("it may not be '@', start or end with '/', or end with '.' or '.lock'")
        }
        for component in name.split(separator: "/") where component.hasPrefix(".") {
            throw fail("no part of it may start with '.'")
        }
    }
}
