import CorralCore

/// Re-streams a tar through the same checks as `TarExtractor`, for archives that will be
/// extracted somewhere corral does not control (a user's tar on its way into a container).
///
/// Each entry is read from a `TarReader`, checked, and written to a `TarWriter` with its name
/// normalised (`./a//b` becomes `a/b`) and, optionally, a forced owner. Refused: absolute
/// names, `..` components, symlinks whose target leaves the archive's root, hard links to
/// names outside it, devices, FIFOs and sockets (or skipped, as asked), and any entry whose
/// path, or hard link target, runs through a symlink that an earlier entry made. Data moves
/// in 64 KiB chunks; memory grows only with the number of symlinks seen.
///
/// The archive's own root directory entry (`.` or `./`) is left out, so the destination
/// keeps its mode and owner. Extended attributes, ACLs and user and group names are not
/// carried over.
///
/// On a refusal the writer has received every entry before the refused one; the error names
/// the refused entry. The writer is not finished: call `finish()` on success, and discard
/// what it wrote on failure.
public enum TarValidator {
    public struct Options: Sendable, Equatable {
        /// The uid and gid every entry gets; nil keeps the archive's own.
        public var ownership: TarOwnership?
        public var specialFiles: SpecialFilePolicy
        /// A cap on the file data passed through; nil for none.
        public var maxTotalBytes: Int64?

        public init(
            ownership: TarOwnership? = nil, specialFiles: SpecialFilePolicy = .refuse, maxTotalBytes: Int64? = nil
        ) {
            self.ownership = ownership
            self.specialFiles = specialFiles
            self.maxTotalBytes = maxTotalBytes
        }
    }

    public struct Summary: Sendable, Equatable {
        /// Entries written to the writer.
        public var entries: Int
        /// Bytes of file data written.
        public var bytes: Int64
        /// Entries left out: special files under `.skip`, and the archive's root directory.
        public var skipped: Int

        public init(entries: Int, bytes: Int64, skipped: Int) {
            self.entries = entries
            self.bytes = bytes
            self.skipped = skipped
        }
    }

    @discardableResult
    public static func validate(from reader: TarReader, into writer: TarWriter, options: Options = Options()) throws
        -> Summary
    {
        let policy = EntryPolicy(specialFiles: options.specialFiles)
        var summary = Summary(entries: 0, bytes: 0, skipped: 0)
        var symlinks = Set<ArchivePath>()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: tarChunkSize, alignment: 16)
        defer { buffer.deallocate() }

        while let entry = try reader.nextEntry() {
            guard case .accept(let checked) = try policy.check(entry), !checked.path.isRoot else {
                summary.skipped += 1
                continue
            }
            if let through = checked.path.ancestors.first(where: symlinks.contains) {
                throw refusal(entry.path, "it would be written through the symlink \(quoted(through.description))")
            }
            if let target = checked.hardlinkTarget, let through = target.ancestors.first(where: symlinks.contains) {
                throw refusal(
                    entry.path, "its hard link target lies through the symlink \(quoted(through.description))")
            }
            if let limit = options.maxTotalBytes, entry.type == .file, entry.size > limit - summary.bytes {
                throw CorralError(
                    .resourceExhausted,
                    "tar entry \(quoted(entry.path)) (\(entry.size) bytes) would take the archive's data past its cap of \(limit) bytes",
                    hint: "send less at once, or raise maxTotalBytes")
            }
            if entry.type == .symlink {
                symlinks.insert(checked.path)
            } else {
                symlinks.remove(checked.path)  // a later entry of that name replaces the link
            }

            var copy = entry
            copy.path = checked.path.description
            if let target = checked.hardlinkTarget { copy.linkTarget = target.description }
            if let owner = options.ownership {
                copy.uid = owner.uid
                copy.gid = owner.gid
            }
            try writer.beginEntry(copy)
            if copy.type == .file {
                while case let count = try reader.readData(into: buffer), count > 0, let base = buffer.baseAddress {
                    try writer.writeEntryData(UnsafeRawBufferPointer(start: base, count: count))
                    summary.bytes += Int64(count)
                }
            }
            try writer.endEntry()
            summary.entries += 1
        }
        return summary
    }
}
