import CorralCore
import CorralPOSIX
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension TarWriter {
    /// What `addTree` put into the archive.
    public struct TreeSummary: Sendable, Equatable {
        /// Entries written: directories, files, symlinks and hard links.
        public var entries: Int
        /// Bytes of file data written.
        public var bytes: Int64
        /// Devices, FIFOs and sockets left out (an archive for a sandbox never carries them).
        public var skipped: Int

        public init(entries: Int, bytes: Int64, skipped: Int) {
            self.entries = entries
            self.bytes = bytes
            self.skipped = skipped
        }
    }

    /// Adds a host file or directory tree under `archivePath`.
    ///
    /// The walk never follows a symlink: the last component of `hostPath` and everything
    /// beneath it is opened with `O_NOFOLLOW` relative to its parent's descriptor, and symlinks
    /// are stored as symlinks, so a link inside the tree cannot pull outside files in. Files
    /// with several links inside the tree become hard-link entries. Names are sorted, so the
    /// same tree gives the same archive. Devices, FIFOs and sockets are skipped and counted.
    ///
    /// - Parameters:
    ///   - archivePath: the name of the tree's root inside the archive (`workspace/src`); `.`
    ///     or empty puts the directory's children at the top, with no entry for the root.
    ///     Absolute names and `..` are refused.
    ///   - ownership: the uid and gid every entry gets (for example 1000:1000 for a
    ///     sandbox); nil keeps the host's.
    @discardableResult
    public func addTree(from hostPath: URL, as archivePath: String, ownership: TarOwnership? = nil) throws
        -> TreeSummary
    {
        try requireOpen()
        let root: ArchivePath
        do {
            root = try ArchivePath(validating: archivePath.isEmpty ? "." : archivePath)
        } catch {
            throw CorralError.invalidArgument(
                "cannot archive \(quoted(hostPath.path)) as \(quoted(archivePath)): \(error.reason)",
                hint: "name it with a relative path such as 'workspace/src'")
        }
        var walk = TreeWalk(writer: self, ownership: ownership)
        try walk.addRoot(hostPath.path, as: root)
        return TreeSummary(entries: walk.entries, bytes: walk.bytes, skipped: walk.skipped)
    }
}

/// One `addTree` call: the counts, and the files already seen with more than one link.
private struct TreeWalk {
    struct FileID: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    let writer: TarWriter
    let ownership: TarOwnership?
    var entries = 0
    var bytes: Int64 = 0
    var skipped = 0
    var linked: [FileID: String] = [:]

    init(writer: TarWriter, ownership: TarOwnership?) {
        self.writer = writer
        self.ownership = ownership
    }

    mutating func addRoot(_ hostPath: String, as root: ArchivePath) throws {
        var info = stat()
        guard lstat(hostPath, &info) == 0 else { throw CorralError.posix(errno, "cannot archive \(quoted(hostPath))") }
        let type = FileTypeBits.of(info)
        if root.isRoot && type != FileTypeBits.directory {
            throw CorralError.invalidArgument(
                "cannot archive \(quoted(hostPath)) as '.': only a directory can stand for the archive's top",
                hint: "give the file a name inside the archive")
        }
        switch type {
        case FileTypeBits.directory:
            let fd = open(hostPath, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw CorralError.posix(errno, "cannot open directory \(quoted(hostPath))") }
            defer { close(fd) }
            var opened = stat()
            guard fstat(fd, &opened) == 0 else { throw CorralError.posix(errno, "cannot inspect \(quoted(hostPath))") }
            if !root.isRoot { try addDirectory(root, opened) }
            try walkDirectory(fd, hostPath: hostPath, as: root)
        case FileTypeBits.regular, FileTypeBits.symlink:
            // The parent is the caller's business (it may lie behind a symlink); only the
            // last component must not be followed.
            let parent = (hostPath as NSString).deletingLastPathComponent
            let name = (hostPath as NSString).lastPathComponent
            let fd = open(parent.isEmpty ? "." : parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard fd >= 0 else { throw CorralError.posix(errno, "cannot open directory \(quoted(parent))") }
            defer { close(fd) }
            try addChild(name, in: fd, hostPath: hostPath, as: root, info: info)
        default:
            skipped += 1
        }
    }

    private mutating func walkDirectory(_ fd: Int32, hostPath: String, as path: ArchivePath) throws {
        for name in try directoryNames(fd, hostPath: hostPath) {
            let childHost = hostPath.hasSuffix("/") ? hostPath + name : hostPath + "/" + name
            var info = stat()
            guard fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
                if errno == ENOENT { continue }  // removed while we walked: nothing to archive
                throw CorralError.posix(errno, "cannot inspect \(quoted(childHost))")
            }
            try addChild(name, in: fd, hostPath: childHost, as: path.appending(name), info: info)
        }
    }

    private mutating func addChild(_ name: String, in parent: Int32, hostPath: String, as path: ArchivePath, info: stat)
        throws
    {
        let owner = ownership ?? TarOwnership(uid: Int(info.st_uid), gid: Int(info.st_gid))
        switch FileTypeBits.of(info) {
        case FileTypeBits.symlink:
            let target = try linkTarget(name, in: parent, hostPath: hostPath)
            try writer.addSymlink(
                path: path.description, target: target, uid: owner.uid, gid: owner.gid, mtime: Date(info.st_mtim))
            entries += 1
        case FileTypeBits.regular:
            let id = FileID(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
            if info.st_nlink > 1, let first = linked[id] {
                try writer.addHardLink(
                    path: path.description, target: first, mode: UInt32(info.st_mode), uid: owner.uid, gid: owner.gid,
                    mtime: Date(info.st_mtim))
                entries += 1
                return
            }
            // O_NONBLOCK: should the name have been swapped for a FIFO since fstatat, open
            // must not hang; fstat on the descriptor then tells what was really opened.
            let fd = openat(parent, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
            guard fd >= 0 else { throw CorralError.posix(errno, "cannot open \(quoted(hostPath)) to archive it") }
            defer { close(fd) }
            var opened = stat()
            guard fstat(fd, &opened) == 0 else { throw CorralError.posix(errno, "cannot inspect \(quoted(hostPath))") }
            guard FileTypeBits.of(opened) == FileTypeBits.regular else {
                skipped += 1
                return
            }
            let entry = TarEntry(
                path: path.description, type: .file, size: Int64(opened.st_size), mode: UInt32(opened.st_mode),
                uid: owner.uid, gid: owner.gid, mtime: Date(opened.st_mtim))
            try writer.addOpenFile(fd, entry: entry, hostPath: hostPath)
            if opened.st_nlink > 1 { linked[id] = path.description }
            entries += 1
            bytes += entry.size
        case FileTypeBits.directory:
            let fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw CorralError.posix(errno, "cannot open directory \(quoted(hostPath))") }
            defer { close(fd) }
            var opened = stat()
            guard fstat(fd, &opened) == 0 else { throw CorralError.posix(errno, "cannot inspect \(quoted(hostPath))") }
            try addDirectory(path, opened)
            try walkDirectory(fd, hostPath: hostPath, as: path)
        default:
            skipped += 1
        }
    }

    private mutating func addDirectory(_ path: ArchivePath, _ info: stat) throws {
        let owner = ownership ?? TarOwnership(uid: Int(info.st_uid), gid: Int(info.st_gid))
        try writer.addDirectory(
            path: path.description, mode: UInt32(info.st_mode), uid: owner.uid, gid: owner.gid,
            mtime: Date(info.st_mtim))
        entries += 1
    }

    private func linkTarget(_ name: String, in parent: Int32, hostPath: String) throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlinkat(parent, name, &buffer, buffer.count - 1)
        guard length >= 0 else { throw CorralError.posix(errno, "cannot read the symlink \(quoted(hostPath))") }
        guard length < buffer.count - 1 else {
            throw CorralError(.invalidArgument, "the symlink \(quoted(hostPath)) has a target longer than PATH_MAX")
        }
        guard let target = String(validating: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) else {
            throw CorralError(
                .invalidArgument, "the symlink \(quoted(hostPath)) has a target that is not valid UTF-8",
                hint: "point it at a UTF-8 name before archiving it")
        }
        return target
    }

    /// The names in a directory, sorted by their bytes, without `.` and `..`.
    private func directoryNames(_ fd: Int32, hostPath: String) throws -> [String] {
        let listing = dup(fd)  // fdopendir takes ownership; the walk keeps using `fd`
        guard listing >= 0 else { throw CorralError.posix(errno, "cannot list \(quoted(hostPath))") }
        guard let directory = fdopendir(listing) else {
            let number = errno
            close(listing)
            throw CorralError.posix(number, "cannot list \(quoted(hostPath))")
        }
        defer { closedir(directory) }
        var names: [String] = []
        while true {
            errno = 0
            guard let item = readdir(directory) else {
                if errno != 0 { throw CorralError.posix(errno, "cannot list \(quoted(hostPath))") }
                break
            }
            let raw = DirectoryEntry.nameBytes(item)
            if raw == [0x2E] || raw == [0x2E, 0x2E] { continue }
            guard let name = String(validating: raw, as: UTF8.self) else {
                throw CorralError(
                    .invalidArgument,
                    "cannot archive \(quoted(String(decoding: raw, as: UTF8.self))) in \(quoted(hostPath)): its name is not valid UTF-8",
                    hint: "rename it to a UTF-8 name")
            }
            names.append(name)
        }
        return names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }
}
