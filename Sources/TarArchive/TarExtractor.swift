import CArchive
import CorralCore
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Extracts a tar stream into a host directory, refusing anything that would land outside it.
///
/// Each entry is checked before anything of it is written, in this order:
/// - its name: absolute paths and `..` components are refused (a leading `./` is fine);
/// - devices, FIFOs and sockets: refused, or skipped with `specialFiles: .skip`;
/// - symlinks: the target must stay inside (see `checkSymlinkTarget`; absolute targets and
///   targets that climb too high are refused);
/// - hard links: the target must be a name inside (no `..`, not absolute), already extracted;
/// - while the entry's directories are opened, one by one from the target directory with
///   `O_NOFOLLOW`: an entry that would be written through a symlink, whether the archive made
///   it or it was there before, is refused (entry `a` a symlink to `/etc`, then `a/passwd`).
///
/// Files are never written into an existing inode: whatever has the entry's name is removed
/// first (a non-empty directory is never removed), so a pre-existing hard link cannot carry
/// the write elsewhere.
///
/// A refusal, or any other error, stops the extraction at that entry: nothing of it or of
/// later entries is written, while earlier entries stay on disk (directories keep the 0700
/// they were created with). Extract into a fresh directory and remove it on error when you
/// need all or nothing. The error names the entry.
///
/// Blocking; run it on a thread of your own. The target directory must not be changed by
/// anyone else during extraction.
public enum TarExtractor {
    public struct Options: Sendable, Equatable {
        public enum Ownership: Sendable, Equatable {
            /// Entries belong to whoever runs the extraction; set-user-id and set-group-id
            /// bits are dropped.
            case currentUser
            /// Entries get the archive's uid and gid (needs root, or `CAP_CHOWN`).
            case preserve
            /// Every entry gets this uid and gid (needs root, or `CAP_CHOWN`).
            case fixed(TarOwnership)
        }

        public var ownership: Ownership
        public var specialFiles: SpecialFilePolicy
        /// A cap on the file data written, checked against each entry's size before it is
        /// written; nil for none.
        public var maxTotalBytes: Int64?

        public init(
            ownership: Ownership = .currentUser, specialFiles: SpecialFilePolicy = .refuse, maxTotalBytes: Int64? = nil
        ) {
            self.ownership = ownership
            self.specialFiles = specialFiles
            self.maxTotalBytes = maxTotalBytes
        }
    }

    public struct Summary: Sendable, Equatable {
        /// Entries extracted (an entry for the target directory itself counts, but leaves
        /// that directory's mode and owner alone).
        public var entries: Int
        /// Bytes of file data written.
        public var bytes: Int64
        /// Special files left out under `specialFiles: .skip`.
        public var skipped: Int

        public init(entries: Int, bytes: Int64, skipped: Int) {
            self.entries = entries
            self.bytes = bytes
            self.skipped = skipped
        }
    }

    @discardableResult
    public static func extract(from reader: TarReader, into directory: URL, options: Options = Options()) throws
        -> Summary
    {
        let extraction = try Extraction(directory: directory.path, options: options)
        return try extraction.run(reader)
    }
}

/// One extraction: the target directory's descriptor, the directories whose mode and times
/// are set at the end, and the last parent directory opened.
private final class Extraction {
    /// What a directory entry asks for, applied once every entry is in, so that a read-only
    /// directory can still receive its children and its mtime is not disturbed by them.
    struct DirectoryFixup {
        var path: ArchivePath
        var entry: TarEntry
    }

    let root: Int32
    let options: TarExtractor.Options
    let policy: EntryPolicy
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: tarChunkSize, alignment: 16)
    var directories: [DirectoryFixup] = []
    /// Entries are usually grouped by directory; keeping the last parent open saves walking
    /// from the root for each of them.
    var cachedParent: (path: ArchivePath, fd: Int32)?
    var summary = TarExtractor.Summary(entries: 0, bytes: 0, skipped: 0)

    init(directory: String, options: TarExtractor.Options) throws {
        root = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        self.options = options
        policy = EntryPolicy(specialFiles: options.specialFiles)
        guard root >= 0 else {
            throw CorralError.posix(
                errno, "cannot extract into \(quoted(directory))",
                hint: "create the directory first; extraction never does")
        }
    }

    deinit {
        dropCachedParent()
        if root >= 0 { close(root) }
        buffer.deallocate()
    }

    func run(_ reader: TarReader) throws -> TarExtractor.Summary {
        while let entry = try reader.nextEntry() {
            guard case .accept(let checked) = try policy.check(entry) else {
                summary.skipped += 1
                continue
            }
            if let limit = options.maxTotalBytes, entry.type == .file, entry.size > limit - summary.bytes {
                throw CorralError(
                    .resourceExhausted,
                    "tar entry \(quoted(entry.path)) (\(entry.size) bytes) would take the extracted data past its cap of \(limit) bytes",
                    hint: "raise maxTotalBytes, or copy less at once")
            }
            try place(checked, from: reader)
            summary.entries += 1
        }
        for fixup in directories.reversed() { try apply(fixup) }
        return summary
    }

    // MARK: Entries

    private func place(_ checked: CheckedEntry, from reader: TarReader) throws {
        let entry = checked.entry
        // The target directory itself: the caller's, so its mode and owner stay as they are.
        guard let name = checked.path.name else { return }
        let owner = try owner(for: entry)  // an impossible owner is refused before anything is written
        let parent = try openParent(of: checked.path, for: entry.path)
        switch entry.type {
        case .directory:
            if try clearName(name, in: parent, for: entry.path, keepingDirectory: true) != .directory {
                guard mkdirat(parent, name, 0o700) == 0 else {
                    throw diskError(errno, entry.path, "cannot create the directory")
                }
            }
            directories.append(DirectoryFixup(path: checked.path, entry: entry))
        case .file:
            try writeFile(name, in: parent, entry: entry, owner: owner, from: reader)
        case .symlink:
            _ = try clearName(name, in: parent, for: entry.path, keepingDirectory: false)
            guard symlinkat(entry.linkTarget ?? "", parent, name) == 0 else {
                throw diskError(errno, entry.path, "cannot create the symlink")
            }
            if let owner, fchownat(parent, name, uid_t(owner.uid), gid_t(owner.gid), AT_SYMLINK_NOFOLLOW) != 0 {
                throw ownershipError(errno, entry, owner)
            }
            var times = Self.times(entry)
            guard utimensat(parent, name, &times, AT_SYMLINK_NOFOLLOW) == 0 else {
                throw diskError(errno, entry.path, "cannot set the symlink's time")
            }
        case .hardlink:
            guard let target = checked.hardlinkTarget, let targetName = target.name else { return }
            let targetParent = try openExistingParent(of: target, for: entry.path)
            defer { if targetParent != root { close(targetParent) } }
            var source = stat()
            guard fstatat(targetParent, targetName, &source, AT_SYMLINK_NOFOLLOW) == 0 else {
                if errno == ENOENT {
                    throw CorralError(
                        .invalidArgument,
                        "cannot extract tar entry \(quoted(entry.path)): its hard link target \(quoted(target.description)) does not exist",
                        hint: "a hard link must name a file that comes earlier in the archive")
                }
                throw diskError(errno, entry.path, "cannot inspect its hard link target")
            }
            guard FileTypeBits.of(source) != FileTypeBits.directory else {
                throw refusal(
                    entry.path, "hard link to the directory \(quoted(target.description))", hint: malformedHint)
            }
            var existing = stat()
            if fstatat(parent, name, &existing, AT_SYMLINK_NOFOLLOW) == 0, existing.st_dev == source.st_dev,
                existing.st_ino == source.st_ino
            {
                return  // already that very file
            }
            _ = try clearName(name, in: parent, for: entry.path, keepingDirectory: false)
            // Flags 0: a link to a symlink links the symlink itself, never what it points at.
            guard linkat(targetParent, targetName, parent, name, 0) == 0 else {
                throw diskError(errno, entry.path, "cannot create the hard link")
            }
        case .other:
            return  // EntryPolicy refused or skipped it
        }
    }

    private func writeFile(
        _ name: String, in parent: Int32, entry: TarEntry, owner: TarOwnership?, from reader: TarReader
    ) throws {
        _ = try clearName(name, in: parent, for: entry.path, keepingDirectory: false)
        // O_EXCL after the name was cleared: a fresh inode, never one that a link shares.
        let fd = openat(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw diskError(errno, entry.path, "cannot create the file") }
        var open = true
        defer { if open { close(fd) } }
        while true {
            let count = try reader.readData(into: buffer)
            guard count > 0, let base = buffer.baseAddress else { break }
            if let limit = options.maxTotalBytes, Int64(count) > limit - summary.bytes {
                throw CorralError(
                    .resourceExhausted,
                    "tar entry \(quoted(entry.path)) takes the extracted data past its cap of \(limit) bytes",
                    hint: "raise maxTotalBytes, or copy less at once")
            }
            if let failure = writeFully(fd, base, count) {
                throw diskError(failure, entry.path, "cannot write the file")
            }
            summary.bytes += Int64(count)
        }
        // Owner first: chown clears set-user-id bits, which the mode then restores.
        if let owner, fchown(fd, uid_t(owner.uid), gid_t(owner.gid)) != 0 {
            throw ownershipError(errno, entry, owner)
        }
        guard fchmod(fd, mode_t(permissions(entry))) == 0 else {
            throw diskError(errno, entry.path, "cannot set the file's mode")
        }
        var times = Self.times(entry)
        guard futimens(fd, &times) == 0 else { throw diskError(errno, entry.path, "cannot set the file's time") }
        open = false
        guard close(fd) == 0 else { throw diskError(errno, entry.path, "cannot finish writing the file") }
    }

    private func apply(_ fixup: DirectoryFixup) throws {
        let entry = fixup.entry
        guard let fd = try? openExisting(fixup.path, for: entry.path) else { return }  // replaced since: nothing to fix
        defer { close(fd) }
        if let owner = try owner(for: entry), fchown(fd, uid_t(owner.uid), gid_t(owner.gid)) != 0 {
            throw ownershipError(errno, entry, owner)
        }
        guard fchmod(fd, mode_t(permissions(entry))) == 0 else {
            throw diskError(errno, entry.path, "cannot set the directory's mode")
        }
        var times = Self.times(entry)
        guard futimens(fd, &times) == 0 else { throw diskError(errno, entry.path, "cannot set the directory's time") }
    }

    // MARK: Walking without following links

    enum Existing { case absent, directory, other }

    /// Makes `name` free for a new entry: removes a file, a symlink or an empty directory
    /// that holds it. Keeps a directory when asked, so directory entries merge.
    private func clearName(_ name: String, in parent: Int32, for entry: String, keepingDirectory: Bool) throws
        -> Existing
    {
        var info = stat()
        guard fstatat(parent, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
            if errno == ENOENT { return .absent }
            throw diskError(errno, entry, "cannot inspect what it replaces")
        }
        if FileTypeBits.of(info) == FileTypeBits.directory {
            if keepingDirectory { return .directory }
            guard unlinkat(parent, name, AT_REMOVEDIR) == 0 else {
                if errno == ENOTEMPTY || errno == EEXIST {
                    throw CorralError(
                        .invalidArgument,
                        "cannot extract tar entry \(quoted(entry)): a non-empty directory of that name is in the way",
                        hint: "extract into an empty directory")
                }
                throw diskError(errno, entry, "cannot remove the empty directory in its way")
            }
            // The cached parent may have been that directory. It may also be `parent`, which
            // stays valid and which the caller goes on to use: closed, its number could be
            // another thread's by the next call on it.
            if cachedParent?.fd != parent { dropCachedParent() }
            return .absent
        }
        guard unlinkat(parent, name, 0) == 0 else { throw diskError(errno, entry, "cannot remove what it replaces") }
        return .absent
    }

    /// The directory that will hold `path`, created as needed (0755, like tar's implied
    /// directories); borrowed from the cache, so the caller does not close it.
    private func openParent(of path: ArchivePath, for entry: String) throws -> Int32 {
        let parent = path.parent
        if parent.isRoot { return root }
        if let cachedParent, cachedParent.path == parent { return cachedParent.fd }
        let fd = try walk(to: parent, for: entry, creating: true)
        dropCachedParent()
        cachedParent = (parent, fd)
        return fd
    }

    /// The existing directory that holds `path` (a hard link's target); the caller closes it
    /// unless it is the root.
    private func openExistingParent(of path: ArchivePath, for entry: String) throws -> Int32 {
        let parent = path.parent
        return parent.isRoot ? root : try walk(to: parent, for: entry, creating: false, linkTarget: true)
    }

    private func openExisting(_ path: ArchivePath, for entry: String) throws -> Int32 {
        try walk(to: path, for: entry, creating: false)
    }

    /// Opens `path` one component at a time from the root with `O_NOFOLLOW`: a symlink on
    /// the way, however it got there, is a refusal, never a detour.
    private func walk(to path: ArchivePath, for entry: String, creating: Bool, linkTarget: Bool = false) throws -> Int32
    {
        var current = root
        var reached = ArchivePath.root
        do {
            for component in path.components {
                reached = reached.appending(component)
                let next = try openDirectory(
                    component, in: current, reached: reached, for: entry, creating: creating, linkTarget: linkTarget)
                if current != root { close(current) }
                current = next
            }
        } catch {
            if current != root { close(current) }
            throw error
        }
        return current
    }

    private func openDirectory(
        _ name: String, in parent: Int32, reached: ArchivePath, for entry: String, creating: Bool, linkTarget: Bool
    ) throws -> Int32 {
        var created = false
        while true {
            let fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if fd >= 0 { return fd }
            let failure = errno
            if failure == ENOENT && creating && !created {
                created = true
                if mkdirat(parent, name, 0o755) != 0 && errno != EEXIST {
                    throw diskError(errno, entry, "cannot create its directory \(quoted(reached.description))")
                }
                continue
            }
            var info = stat()
            if (failure == ELOOP || failure == ENOTDIR) && fstatat(parent, name, &info, AT_SYMLINK_NOFOLLOW) == 0 {
                let what = linkTarget ? "its hard link target lies" : "it would be written"
                if FileTypeBits.of(info) == FileTypeBits.symlink {
                    throw refusal(entry, "\(what) through the symlink \(quoted(reached.description))")
                }
                throw CorralError(
                    .invalidArgument,
                    "cannot extract tar entry \(quoted(entry)): \(quoted(reached.description)) is not a directory",
                    hint: "the archive, or what is already in the target directory, uses that name for a file")
            }
            if failure == ENOENT && !creating {
                throw CorralError(
                    .invalidArgument,
                    "cannot extract tar entry \(quoted(entry)): the directory \(quoted(reached.description)) does not exist",
                    hint: "a hard link must name a file that comes earlier in the archive")
            }
            throw diskError(failure, entry, "cannot open its directory \(quoted(reached.description))")
        }
    }

    private func dropCachedParent() {
        if let cachedParent { close(cachedParent.fd) }
        cachedParent = nil
    }

    // MARK: Metadata

    /// The owner to give an entry, or nil to leave it to whoever extracts.
    private func owner(for entry: TarEntry) throws -> TarOwnership? {
        let owner: TarOwnership
        switch options.ownership {
        case .currentUser: return nil
        case .preserve: owner = TarOwnership(uid: entry.uid, gid: entry.gid)
        case .fixed(let fixed): owner = fixed
        }
        // uid_t(-1) would mean "leave unchanged" to chown; anything outside 32 bits cannot exist.
        guard (0..<Int(UInt32.max)).contains(owner.uid), (0..<Int(UInt32.max)).contains(owner.gid) else {
            throw CorralError(
                .invalidArgument,
                "cannot extract tar entry \(quoted(entry.path)): owner \(owner.uid):\(owner.gid) is not a valid uid:gid",
                hint: "extract with ownership .currentUser or .fixed")
        }
        return owner
    }

    private func permissions(_ entry: TarEntry) -> UInt32 {
        options.ownership == .currentUser ? entry.mode & 0o1777 : entry.mode & 0o7777
    }

    private static func times(_ entry: TarEntry) -> [timespec] {
        let time = TarTimestamp(secondsSince1970: entry.mtime.timeIntervalSince1970).cTimespec
        // Access time: left as the extraction made it. Modification time: the archive's.
        return [timespec(tv_sec: 0, tv_nsec: corral_utime_omit()), time]
    }

    private func diskError(_ number: Int32, _ entry: String, _ what: String) -> CorralError {
        CorralError.posix(number, "cannot extract tar entry \(quoted(entry)): \(what)")
    }

    private func ownershipError(_ number: Int32, _ entry: TarEntry, _ owner: TarOwnership) -> CorralError {
        CorralError.posix(
            number, "cannot extract tar entry \(quoted(entry.path)): cannot give it owner \(owner.uid):\(owner.gid)",
            hint: "setting owners needs root or CAP_CHOWN; extract with ownership .currentUser")
    }
}
