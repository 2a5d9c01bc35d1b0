import CorralCore
import CorralPolicy

/// Where a vault credential may be used: a whole host, one owner on it, or one repository.
///
/// Written `HOST`, `HOST/OWNER` or `HOST/OWNER/REPO`. When several credentials match a
/// repository, the most specific scope wins (`HOST/OWNER/REPO` over `HOST/OWNER` over `HOST`).
public struct CredentialScope: Sendable, Hashable, Codable, CustomStringConvertible, Comparable {
    public let host: String
    public let owner: String?
    public let repository: String?

    public init(parsing text: String) throws {
        var rest = Substring(text)
        while rest.hasSuffix("/") { rest.removeLast() }
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        func fail(_ why: String) -> CorralError {
            CorralError.invalidArgument(
                "invalid scope '\(text.prefix(200))': \(why)",
                hint: "a scope is HOST, HOST/OWNER or HOST/OWNER/REPO, such as github.com/apple")
        }
        guard (1...3).contains(parts.count) else { throw fail("expected HOST[/OWNER[/REPO]]") }
        do {
            host = try GitRepository.checkHost(parts[0])
            owner = parts.count > 1 ? try GitRepository.checkSegment(parts[1], what: "owner") : nil
            repository =
                parts.count > 2
                ? try GitRepository.checkSegment(GitRepository.dropGitSuffix(parts[2]), what: "repository name") : nil
        } catch let error as CorralError {
            throw fail(error.message)
        }
    }

    /// The scope that covers exactly one repository.
    public init(_ repository: GitRepository) {
        host = repository.host
        owner = repository.owner
        self.repository = repository.name
    }

    public var description: String {
        [host, owner, repository].compactMap { $0 }.joined(separator: "/")
    }

    /// 1 for a host, 2 for an owner, 3 for a repository.
    public var specificity: Int { repository != nil ? 3 : owner != nil ? 2 : 1 }

    public func covers(_ target: GitRepository) -> Bool {
        guard host == target.host else { return false }
        if let owner, owner != target.owner { return false }
        if let repository, repository != target.name { return false }
        return true
    }

    public static func < (lhs: CredentialScope, rhs: CredentialScope) -> Bool { lhs.description < rhs.description }

    public init(from decoder: any Decoder) throws {
        try self.init(parsing: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
