import CorralCore

/// An entry name split into checked components, relative to wherever the archive lands.
///
/// Construction is the traversal policy: absolute names and `..` components are refused;
/// `.` components, empty components and a leading `./` are dropped. The empty path is the
/// destination directory itself.
struct ArchivePath: Hashable, Sendable, CustomStringConvertible {
    private(set) var components: [String]

    static let root = ArchivePath(checkedComponents: [])

    private init(checkedComponents: [String]) {
        components = checkedComponents
    }

    /// Why a name cannot become a path inside the destination.
    enum Problem: Error, Equatable {
        case empty
        case absolute
        case parentComponent

        var reason: String {
            switch self {
            case .empty: "its name is empty"
            case .absolute: "its path is absolute"
            case .parentComponent: "its path has a '..' component"
            }
        }
    }

    init(validating name: String) throws(Problem) {
        if name.isEmpty { throw .empty }
        if name.hasPrefix("/") { throw .absolute }
        var parts: [String] = []
        for part in name.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." { throw .parentComponent }
            parts.append(String(part))
        }
        components = parts
    }

    var isRoot: Bool { components.isEmpty }
    var name: String? { components.last }
    var parent: ArchivePath { ArchivePath(checkedComponents: Array(components.dropLast())) }
    var depth: Int { components.count }

    /// Every strict ancestor except the root, shortest first: `a`, `a/b` for `a/b/c`.
    var ancestors: [ArchivePath] {
        guard components.count > 1 else { return [] }
        return (1..<components.count).map { ArchivePath(checkedComponents: Array(components.prefix($0))) }
    }

    func appending(_ component: String) -> ArchivePath {
        ArchivePath(checkedComponents: components + [component])
    }

    var description: String { components.isEmpty ? "." : components.joined(separator: "/") }
}

/// Why a symlink target would leave the destination.
enum SymlinkTargetProblem: Error, Equatable {
    case empty
    case absolute
    case escapes
    case parentAfterName

    var reason: String {
        switch self {
        case .empty: "its target is empty"
        case .absolute: "its target is absolute, so it points outside the target directory"
        case .escapes: "its target climbs above the target directory"
        case .parentAfterName:
            "its target has '..' after a name, which could climb out through another link; "
                + "only leading '..' components are accepted"
        }
    }
}

/// Checks that a symlink stored at `link` can only ever lead to somewhere inside the
/// destination.
///
/// Lexical checking alone is not enough: with `p/q/x -> ../..`, the target `p/q/x/..` looks
/// like `p/q` but resolves above the destination. So a target may climb only with leading
/// `..` components (`../../lib/libc.so`), at most as far as the link's own depth, and then
/// descend by name. The link's parent directories are real directories (extraction never
/// writes through a symlink and never replaces a non-empty directory), so the climb ends
/// inside; each name it then descends through is a directory, a file, or a symlink that
/// obeyed this same rule, so by induction the whole resolution stays inside.
func checkSymlinkTarget(_ target: String, at link: ArchivePath) throws(SymlinkTargetProblem) {
    if target.isEmpty { throw .empty }
    if target.hasPrefix("/") { throw .absolute }
    var climbs = 0
    var sawName = false
    for part in target.split(separator: "/", omittingEmptySubsequences: true) {
        if part == "." { continue }
        if part == ".." {
            if sawName { throw .parentAfterName }
            climbs += 1
        } else {
            sawName = true
        }
    }
    if climbs > link.depth - 1 { throw .escapes }
}

/// The refusal every entry check ends in: names the entry, says why, says what to do.
func refusal(_ entry: String, _ reason: String, hint: String = escapeHint) -> CorralError {
    CorralError(.permissionDenied, "tar entry \(quoted(entry)) refused: \(reason)", hint: hint)
}

let escapeHint =
    "the archive tries to reach outside its target directory; rebuild it with relative paths and links that stay inside"

/// An entry that passed the checks every consumer shares, with its names parsed.
struct CheckedEntry {
    var entry: TarEntry
    var path: ArchivePath
    /// For hard links: the entry they name.
    var hardlinkTarget: ArchivePath?
}

/// The checks `TarExtractor` and `TarValidator` share, on one entry at a time, before
/// anything of it is written.
struct EntryPolicy {
    var specialFiles: SpecialFilePolicy

    enum Verdict {
        case accept(CheckedEntry)
        case skip
    }

    func check(_ entry: TarEntry) throws(CorralError) -> Verdict {
        let path: ArchivePath
        do {
            path = try ArchivePath(validating: entry.path)
        } catch {
            throw refusal(entry.path, error.reason)
        }
        var checked = CheckedEntry(entry: entry, path: path)
        switch entry.type {
        case .other:
            switch specialFiles {
            case .skip: return .skip
            case .refuse:
                throw refusal(
                    entry.path, "it is a \(entry.kindDescription), and only files, directories and links are extracted",
                    hint: "leave such entries out of the archive, or pass specialFiles: .skip to drop them"
                )
            }
        case .directory:
            return .accept(checked)
        case .file, .symlink, .hardlink:
            if path.isRoot {
                throw refusal(
                    entry.path, "it names the target directory itself but is a \(entry.type)", hint: malformedHint)
            }
        }
        if entry.type == .symlink {
            guard let target = entry.linkTarget else {
                throw refusal(entry.path, "the symlink has no target", hint: malformedHint)
            }
            do {
                try checkSymlinkTarget(target, at: path)
            } catch {
                throw refusal(entry.path, "symlink to \(quoted(target)): \(error.reason)")
            }
        }
        if entry.type == .hardlink {
            guard let target = entry.linkTarget else {
                throw refusal(entry.path, "the hard link has no target", hint: malformedHint)
            }
            let targetPath: ArchivePath
            do {
                targetPath = try ArchivePath(validating: target)
            } catch {
                throw refusal(entry.path, "hard link to \(quoted(target)): \(error.reason)")
            }
            if targetPath.isRoot || targetPath == path {
                throw refusal(
                    entry.path, "hard link to \(quoted(target)), which is not a file in the archive",
                    hint: malformedHint)
            }
            checked.hardlinkTarget = targetPath
        }
        return .accept(checked)
    }
}

let malformedHint = "the archive is malformed; recreate it with tar or TarWriter"
