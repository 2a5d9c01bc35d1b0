import CArchive
import CorralCore
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a tar stream through libarchive, either into a sink closure or into memory.
///
/// Blocking and synchronous: run it on a thread of your own, never on Swift's cooperative
/// pool when the sink blocks. Not `Sendable`: one writer belongs to one thread at a time.
///
/// The writer writes names exactly as it is given them; it is not a policy layer. Checks
/// against `..`, absolute names and escaping links belong to `TarValidator` (for archives
/// that leave the host) and `TarExtractor` (for archives that land on it).
///
/// After an error from libarchive, the sink or a host file being read, the writer is spent:
/// every later call throws that same error, and the output so far is not a complete
/// archive. A call refused for its arguments (an empty name, say) writes nothing and leaves
/// the writer usable.
public final class TarWriter {
    public enum Format: Sendable {
        /// POSIX ustar headers, with pax extended headers only for what ustar cannot hold
        /// (long or non-ASCII names, large sizes and ids). Times are whole seconds.
        case pax
        /// Plain ustar: names up to 255 bytes, sizes under 8 GiB, ids under 2097152.
        case ustar
    }

    private enum State {
        case open
        case finished
        case failed(any Error)
    }

    private let archive: OpaquePointer
    private let context: WriteContext
    private let locale = ArchiveLocale()
    private var state = State.open
    /// Bytes still owed to the entry whose header was written last.
    private var entryRemaining: Int64 = 0
    private var entryPath = ""
    private var readBuffer: UnsafeMutableRawBufferPointer?

    /// A writer that hands the archive to `sink` in chunks of about 64 KiB. An error thrown
    /// by the sink stops the writer and comes back, unchanged, from the call that wrote.
    public convenience init(format: Format = .pax, sink: @escaping ([UInt8]) throws -> Void) throws {
        try self.init(format: format, destination: .sink(sink))
    }

    /// A writer that collects the archive in memory; `finish()` returns it.
    public convenience init(format: Format = .pax) throws {
        try self.init(format: format, destination: .memory)
    }

    private init(format: Format, destination: WriteContext.Destination) throws {
        try loadLibarchive()
        guard let archive = corral_archive_write_new() else {
            throw CorralError(
                .resourceExhausted, "cannot allocate a libarchive writer", hint: "free some memory and retry")
        }
        self.archive = archive
        context = WriteContext(destination)
        let chosen =
            switch format {
            case .pax: corral_archive_write_set_format_pax_restricted(archive)
            case .ustar: corral_archive_write_set_format_ustar(archive)
            }
        try check(chosen, "cannot select the tar format", code: .internalError)
        let opened = corral_archive_write_open2(
            archive, Unmanaged.passUnretained(context).toOpaque(), nil,
            { archive, clientData, buffer, length in
                guard let clientData else { return -1 }
                return Unmanaged<WriteContext>.fromOpaque(clientData).takeUnretainedValue()
                    .accept(archive, buffer, length)
            },
            nil, nil
        )
        try check(opened, "cannot start the tar stream")
    }

    deinit {
        if !isFinished {
            // Freeing an unfinished archive makes libarchive pad the current entry to its
            // declared size and write the trailer: endless for a header that declared 2^62
            // bytes, and never wanted in the caller's sink. archive_write_fail skips it all.
            context.abandoned = true
            corral_archive_write_fail(archive)
        }
        corral_archive_write_free(archive)
        readBuffer?.deallocate()
    }

    // MARK: Entries

    /// Adds a regular file whose contents are in memory.
    public func addFile(
        path: String, contents: [UInt8], mode: UInt32 = 0o644, uid: Int = 0, gid: Int = 0, mtime: Date = Date()
    ) throws {
        try beginEntry(
            TarEntry(path: path, type: .file, size: Int64(contents.count), mode: mode, uid: uid, gid: gid, mtime: mtime)
        )
        try contents.withUnsafeBytes { try writeEntryData($0) }
        try endEntry()
    }

    /// Adds a regular file from the host, read in 64 KiB chunks so that its size does not
    /// matter. `hostFile` may be reached through symlinks (the caller named it); it must be a
    /// regular file. Mode, owner and mtime default to the host file's own.
    public func addFile(
        path: String, from hostFile: URL, mode: UInt32? = nil, uid: Int? = nil, gid: Int? = nil, mtime: Date? = nil
    ) throws {
        try requireOpen()
        let hostPath = hostFile.path
        let fd = open(hostPath, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw CorralError.posix(errno, "cannot open \(quoted(hostPath)) to archive it") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw CorralError.posix(errno, "cannot inspect \(quoted(hostPath))") }
        guard FileTypeBits.of(info) == FileTypeBits.regular else {
            throw CorralError.invalidArgument(
                "cannot archive \(quoted(hostPath)) as a file: it is not a regular file",
                hint: "use addTree(from:as:ownership:) for directories and links")
        }
        let entry = TarEntry(
            path: path, type: .file, size: Int64(info.st_size), mode: mode ?? UInt32(info.st_mode),
            uid: uid ?? Int(info.st_uid), gid: gid ?? Int(info.st_gid), mtime: mtime ?? Date(info.st_mtim))
        try addOpenFile(fd, entry: entry, hostPath: hostPath)
    }

    public func addDirectory(path: String, mode: UInt32 = 0o755, uid: Int = 0, gid: Int = 0, mtime: Date = Date())
        throws
    {
        try beginEntry(TarEntry(path: path, type: .directory, mode: mode, uid: uid, gid: gid, mtime: mtime))
        try endEntry()
    }

    public func addSymlink(path: String, target: String, uid: Int = 0, gid: Int = 0, mtime: Date = Date()) throws {
        try beginEntry(
            TarEntry(path: path, type: .symlink, mode: 0o777, uid: uid, gid: gid, mtime: mtime, linkTarget: target))
        try endEntry()
    }

    /// Adds a hard link to `target`, an entry written earlier in this archive.
    public func addHardLink(
        path: String, target: String, mode: UInt32 = 0o644, uid: Int = 0, gid: Int = 0, mtime: Date = Date()
    ) throws {
        try beginEntry(
            TarEntry(path: path, type: .hardlink, mode: mode, uid: uid, gid: gid, mtime: mtime, linkTarget: target))
        try endEntry()
    }

    /// Writes the end-of-archive blocks and hands every remaining byte to the sink.
    ///
    /// - Returns: the whole archive for a writer made with `init(format:)`; empty for a
    ///   writer with a sink, which has already received it.
    @discardableResult
    public func finish() throws -> [UInt8] {
        try requireOpen()
        if entryRemaining > 0 { try fail(shortEntryError()) }
        try check(corral_archive_write_close(archive), "cannot finish the tar stream")
        do {
            try context.flush()
        } catch {
            try fail(error)
        }
        state = .finished
        return context.takeCollected()
    }

    // MARK: Streaming one entry (TarValidator, addTree)

    /// Writes the header of `entry`; its `size` bytes must follow through `writeEntryData`.
    func beginEntry(_ entry: TarEntry) throws {
        try requireOpen()
        if entryRemaining > 0 { try fail(shortEntryError()) }
        try checkWritable(entry)
        guard let header = corral_archive_entry_new() else {
            try fail(
                CorralError(.resourceExhausted, "cannot allocate a tar header", hint: "free some memory and retry"))
        }
        defer { corral_archive_entry_free(header) }
        let time = TarTimestamp(secondsSince1970: entry.mtime.timeIntervalSince1970)
        let status = locale.run {
            // copy_pathname takes the bytes as they are (UTF-8, under the UTF-8 locale);
            // the *_utf8 setters crash libarchive 3.6's pax writer when conversion fails.
            corral_archive_entry_copy_pathname(header, entry.path)
            corral_archive_entry_set_perm(header, mode_t(entry.mode & 0o7777))
            corral_archive_entry_set_uid(header, Int64(entry.uid))
            corral_archive_entry_set_gid(header, Int64(entry.gid))
            corral_archive_entry_set_mtime(header, time_t(time.seconds), Int(time.nanoseconds))
            switch entry.type {
            case .file:
                corral_archive_entry_set_filetype(header, FileTypeBits.regular)
                corral_archive_entry_set_size(header, entry.size)
            case .directory:
                corral_archive_entry_set_filetype(header, FileTypeBits.directory)
                corral_archive_entry_set_size(header, 0)
            case .symlink:
                corral_archive_entry_set_filetype(header, FileTypeBits.symlink)
                corral_archive_entry_set_size(header, 0)
                corral_archive_entry_copy_symlink(header, entry.linkTarget ?? "")
            case .hardlink:
                corral_archive_entry_set_filetype(header, FileTypeBits.regular)
                corral_archive_entry_set_size(header, 0)
                corral_archive_entry_copy_hardlink(header, entry.linkTarget ?? "")
            case .other:
                break  // refused by checkWritable
            }
            return corral_archive_write_header(archive, header)
        }
        try check(status, "cannot write the header of tar entry \(quoted(entry.path))", code: .invalidArgument)
        entryPath = entry.path
        entryRemaining = entry.type == .file ? entry.size : 0
    }

    /// Writes part of the current entry's data; never more than its header declared.
    func writeEntryData(_ bytes: UnsafeRawBufferPointer) throws {
        try requireOpen()
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        guard Int64(bytes.count) <= entryRemaining else {
            try fail(
                CorralError(
                    .invalidArgument,
                    "tar entry \(quoted(entryPath)) was given more data than the \(entryRemaining) bytes left of its size"
                ))
        }
        var offset = 0
        while offset < bytes.count {
            let written = corral_archive_write_data(archive, base + offset, bytes.count - offset)
            if written <= 0 {
                try check(
                    written < 0 ? Int32(written) : ARCHIVE_FATAL,
                    "cannot write the data of tar entry \(quoted(entryPath))")
            }
            offset += written
        }
        entryRemaining -= Int64(bytes.count)
    }

    /// Closes the current entry, which must have received all of its data.
    func endEntry() throws {
        try requireOpen()
        if entryRemaining > 0 { try fail(shortEntryError()) }
        try check(corral_archive_write_finish_entry(archive), "cannot finish tar entry \(quoted(entryPath))")
    }

    /// Streams an open regular file as `entry`, which declares its size; a file that shrinks
    /// meanwhile is an error (the header has promised bytes that no longer exist).
    func addOpenFile(_ fd: Int32, entry: TarEntry, hostPath: String) throws {
        try beginEntry(entry)
        let buffer = chunkBuffer()
        guard let base = buffer.baseAddress else { return }
        var remaining = entry.size
        while remaining > 0 {
            let got = readRetrying(fd, base, Int(min(Int64(buffer.count), remaining)))
            if got < 0 { try fail(CorralError.posix(Int32(-got), "cannot read \(quoted(hostPath))")) }
            if got == 0 {
                try fail(
                    CorralError(
                        .io, "\(quoted(hostPath)) shrank by \(remaining) bytes while it was being archived",
                        hint: "copy it again once nothing is writing to it"))
            }
            try writeEntryData(UnsafeRawBufferPointer(start: base, count: got))
            remaining -= Int64(got)
        }
        try endEntry()
    }

    // MARK: State

    func requireOpen() throws {
        switch state {
        case .open: return
        case .finished:
            throw CorralError(
                .invalidArgument, "the tar writer is already finished",
                hint: "start a new TarWriter for another archive")
        case .failed(let error): throw error
        }
    }

    private func checkWritable(_ entry: TarEntry) throws {
        let problem: String? =
            if entry.path.isEmpty {
                "an entry needs a name"
            } else if entry.path.utf8.contains(0) || (entry.linkTarget?.utf8.contains(0) ?? false) {
                "names cannot hold a NUL byte"
            } else if entry.uid < 0 || entry.gid < 0 {
                "uid and gid cannot be negative"
            } else if entry.size < 0 {
                "size cannot be negative"
            } else if entry.type == .other {
                "TarWriter writes files, directories and links only"
            } else if (entry.type == .symlink || entry.type == .hardlink) && (entry.linkTarget ?? "").isEmpty {
                "a link needs a target"
            } else {
                nil
            }
        if let problem {
            // Nothing was written for this entry, so the archive so far is still sound.
            throw CorralError.invalidArgument("cannot add tar entry \(quoted(entry.path)): \(problem)")
        }
    }

    private func shortEntryError() -> CorralError {
        CorralError(
            .invalidArgument, "tar entry \(quoted(entryPath)) ended \(entryRemaining) bytes short of its declared size")
    }

    /// Turns a libarchive status into an error (any status but OK: a warning from the writer
    /// means a header was not written as asked). The sink's own error wins when there is one.
    private func check(_ status: Int32, _ what: @autoclosure () -> String, code: CorralError.Code = .io) throws {
        guard status != ARCHIVE_OK else { return }
        let error: any Error = context.takeFailure() ?? CorralError(code, "\(what()): \(archiveErrorText(archive))")
        try fail(error)
    }

    private func fail(_ error: any Error) throws -> Never {
        state = .failed(error)
        context.abandoned = true
        corral_archive_write_fail(archive)
        throw error
    }

    private var isFinished: Bool {
        if case .finished = state { return true }
        return false
    }

    private func chunkBuffer() -> UnsafeMutableRawBufferPointer {
        if let readBuffer { return readBuffer }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: tarChunkSize, alignment: 16)
        readBuffer = buffer
        return buffer
    }
}

@available(*, unavailable, message: "a TarWriter belongs to one thread; create it where it is used")
extension TarWriter: Sendable {}

/// Where libarchive's blocks go. Lives as long as the writer; the C callback reaches it
/// through an unretained pointer.
final class WriteContext {
    enum Destination {
        case sink(([UInt8]) throws -> Void)
        case memory
    }

    private let destination: Destination
    private var pending: [UInt8] = []
    private var failure: (any Error)?
    var abandoned = false

    init(_ destination: Destination) {
        self.destination = destination
        if case .sink = destination { pending.reserveCapacity(tarChunkSize + 10240) }
    }

    /// libarchive's write callback: returns `length`, or -1 after recording why.
    func accept(_ archive: OpaquePointer?, _ buffer: UnsafeRawPointer?, _ length: Int) -> Int {
        guard !abandoned, length > 0, let buffer else { return length }
        pending.append(contentsOf: UnsafeRawBufferPointer(start: buffer, count: length))
        if case .sink = destination, pending.count >= tarChunkSize {
            do {
                try flush()
            } catch {
                failure = error
                corral_archive_set_error(archive, EIO, "the tar sink failed")
                return -1
            }
        }
        return length
    }

    func flush() throws {
        guard case .sink(let sink) = destination, !pending.isEmpty else { return }
        let chunk = pending
        pending.removeAll(keepingCapacity: true)
        try sink(chunk)
    }

    func takeFailure() -> (any Error)? {
        defer { failure = nil }
        return failure
    }

    func takeCollected() -> [UInt8] {
        guard case .memory = destination else { return [] }
        defer { pending = [] }
        return pending
    }
}

extension Date {
    init(_ time: timespec) {
        self.init(timeIntervalSince1970: Double(time.tv_sec) + Double(time.tv_nsec) / 1_000_000_000)
    }
}
