import CArchive
import CorralCore
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a tar stream through libarchive, one entry at a time, pulling its input on demand.
///
/// ```swift
/// let reader = try TarReader(pull: { try connection.nextChunk() })
/// while let entry = try reader.nextEntry() {
///     while let chunk = try reader.readChunk() { ... }   // or readData(maxBytes:)
/// }
/// ```
///
/// Blocking and synchronous; memory stays at about one input chunk plus one output chunk
/// whatever the archive's size. Unread data of an entry is skipped by the next
/// `nextEntry()`. Uncompressed tar only (ustar, pax, GNU, v7); an empty input is an empty
/// archive. Not `Sendable`: one reader belongs to one thread at a time.
///
/// A failure of the archive or of the source spends the reader: later calls throw the same
/// error. A size cap in `readData(maxBytes:)` is not a failure of the reader.
public final class TarReader {
    private enum State {
        case reading
        case atEnd
        case failed(any Error)
    }

    private let archive: OpaquePointer
    private let context: ReadContext
    private let locale = ArchiveLocale()
    private var state = State.reading
    /// The entry whose header was read last; nil before the first and after the end.
    public private(set) var currentEntry: TarEntry?
    private var entryDataDone = true

    /// A reader over `pull`, which returns the next bytes of the archive, or nil at its end.
    /// Chunks may have any size; empty ones are skipped. An error thrown by `pull` stops the
    /// reader and comes back, unchanged, from the call that needed more input.
    public init(pull: @escaping () throws -> [UInt8]?) throws {
        try loadLibarchive()
        guard let archive = corral_archive_read_new() else {
            throw CorralError(
                .resourceExhausted, "cannot allocate a libarchive reader", hint: "free some memory and retry")
        }
        self.archive = archive
        context = ReadContext(pull: pull)
        try check(corral_archive_read_support_format_tar(archive), "cannot enable tar reading", code: .internalError)
        try check(corral_archive_read_support_format_empty(archive), "cannot enable tar reading", code: .internalError)
        let opened = locale.run {
            corral_archive_read_open(
                archive, Unmanaged.passUnretained(context).toOpaque(), nil,
                { archive, clientData, buffer in
                    guard let clientData, let buffer else { return -1 }
                    return Unmanaged<ReadContext>.fromOpaque(clientData).takeUnretainedValue().fill(archive, buffer)
                },
                nil
            )
        }
        try check(opened, "cannot start reading the tar stream")
    }

    /// A reader over an archive held in memory.
    public convenience init(bytes: [UInt8]) throws {
        var offset = 0
        try self.init(pull: {
            guard offset < bytes.count else { return nil }
            let end = min(bytes.count, offset + tarChunkSize)
            defer { offset = end }
            return Array(bytes[offset..<end])
        })
    }

    /// A reader over an archive file, read in 64 KiB chunks.
    public convenience init(contentsOf file: URL) throws {
        let source = try FileSource(path: file.path)
        try self.init(pull: { try source.next() })
    }

    deinit {
        corral_archive_read_free(archive)
    }

    // MARK: Entries

    /// Moves to the next entry, skipping what is left of the current one; nil at the end.
    public func nextEntry() throws -> TarEntry? {
        switch state {
        case .failed(let error): throw error
        case .atEnd: return nil
        case .reading: break
        }
        var header: OpaquePointer?
        let status = locale.run { corral_archive_read_next_header(archive, &header) }
        if status == ARCHIVE_EOF {
            state = .atEnd
            currentEntry = nil
            return nil
        }
        // A warning still yields a usable header (an unknown pax keyword, say); names are
        // checked below and by whoever consumes the entry.
        if status != ARCHIVE_WARN { try check(status, "cannot read the next tar header") }
        guard let header else { try fail(CorralError(.internalError, "libarchive returned no tar header")) }
        let entry = try locale.run { try makeEntry(header) }
        currentEntry = entry
        entryDataDone = false
        return entry
    }

    /// The next piece of the current entry's data, at most `maxLength` bytes (and never more
    /// than 1 MiB at once); nil once the entry's data is exhausted (at once for directories
    /// and links).
    public func readChunk(maxLength: Int = 64 * 1024) throws -> [UInt8]? {
        guard maxLength > 0 else {
            throw CorralError.invalidArgument("readChunk needs a positive maxLength, not \(maxLength)")
        }
        let chunk = try [UInt8](unsafeUninitializedCapacity: min(maxLength, 1 << 20)) { buffer, count in
            count = try readData(into: UnsafeMutableRawBufferPointer(buffer))
        }
        return chunk.isEmpty ? nil : chunk
    }

    /// The whole of the current entry's data, refused when it holds more than `maxBytes`
    /// so that a giant entry cannot exhaust memory.
    ///
    /// The refusal (`.resourceExhausted`) leaves the reader usable: call `nextEntry()` to
    /// move on, or read the entry in chunks instead.
    public func readData(maxBytes: Int) throws -> [UInt8] {
        guard maxBytes >= 0 else {
            throw CorralError.invalidArgument("readData needs a cap of zero or more bytes, not \(maxBytes)")
        }
        guard let entry = currentEntry else { return [] }
        guard entry.size <= Int64(maxBytes) else { throw sizeCapError(entry, maxBytes) }
        var data: [UInt8] = []
        data.reserveCapacity(Int(max(0, entry.size)))
        // Ask for one byte past the cap, so that data running past it is noticed.
        while case let room = maxBytes - data.count,
            let chunk = try readChunk(maxLength: room >= tarChunkSize ? tarChunkSize : room + 1)
        {
            if data.count + chunk.count > maxBytes { throw sizeCapError(entry, maxBytes) }
            data += chunk
        }
        return data
    }

    /// Skips what is left of the current entry's data.
    public func skipData() throws {
        try requireReading()
        guard currentEntry != nil, !entryDataDone else { return }
        try check(
            corral_archive_read_data_skip(archive),
            "cannot skip the data of tar entry \(quoted(currentEntry?.path ?? ""))")
        entryDataDone = true
    }

    /// Reads the current entry's data into `buffer`; 0 once it is exhausted.
    func readData(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try requireReading()
        guard currentEntry != nil, !entryDataDone, let base = buffer.baseAddress, !buffer.isEmpty else { return 0 }
        let got = corral_archive_read_data(archive, base, buffer.count)
        if got < 0 {
            try check(Int32(clamping: got), "cannot read the data of tar entry \(quoted(currentEntry?.path ?? ""))")
        }
        if got == 0 { entryDataDone = true }
        return got
    }

    // MARK: Helpers

    private func makeEntry(_ header: OpaquePointer) throws -> TarEntry {
        let path: String
        switch ArchiveText(corral_archive_entry_pathname(header)) {
        case .text(let text): path = text
        case .absent:
            try fail(CorralError(.invalidArgument, "a tar header has no name", hint: malformedArchiveHint))
        case .invalid(let bytes): try fail(invalidNameError(bytes, what: "name"))
        }
        let typeBits = UInt32(corral_archive_entry_filetype(header)) & FileTypeBits.mask
        var linkTarget: String?
        var type: TarEntry.EntryType
        if let hardlink = corral_archive_entry_hardlink(header) {
            type = .hardlink
            linkTarget = try linkText(hardlink, entry: path)
        } else {
            switch typeBits {
            case FileTypeBits.regular: type = .file
            case FileTypeBits.directory: type = .directory
            case FileTypeBits.symlink:
                type = .symlink
                linkTarget = try linkText(corral_archive_entry_symlink(header), entry: path)
            default: type = .other
            }
        }
        let size = (type == .file || type == .hardlink) ? max(0, corral_archive_entry_size(header)) : 0
        let time = Date(
            timespec(tv_sec: corral_archive_entry_mtime(header), tv_nsec: corral_archive_entry_mtime_nsec(header)))
        var entry = TarEntry(
            path: path, type: type, size: size, mode: UInt32(corral_archive_entry_perm(header)),
            uid: Int(corral_archive_entry_uid(header)), gid: Int(corral_archive_entry_gid(header)), mtime: time,
            linkTarget: linkTarget)
        entry.fileTypeBits = typeBits
        return entry
    }

    private func linkText(_ pointer: UnsafePointer<CChar>?, entry: String) throws -> String? {
        switch ArchiveText(pointer) {
        case .text(let text): return text
        case .absent: return nil
        case .invalid(let bytes): try fail(invalidNameError(bytes, what: "link target of \(quoted(entry))"))
        }
    }

    private func invalidNameError(_ bytes: [UInt8], what: String) -> CorralError {
        let shown = String(decoding: bytes, as: UTF8.self)
        return CorralError(
            .invalidArgument, "the \(what) in tar entry \(quoted(shown)) is not valid UTF-8",
            hint: "rename the file to a UTF-8 name before archiving it")
    }

    private func sizeCapError(_ entry: TarEntry, _ maxBytes: Int) -> CorralError {
        CorralError(
            .resourceExhausted,
            "tar entry \(quoted(entry.path)) holds \(entry.size) bytes, more than the cap of \(maxBytes)",
            hint: "read it in pieces with readChunk(maxLength:), or raise maxBytes")
    }

    private func requireReading() throws {
        if case .failed(let error) = state { throw error }
    }

    /// Turns a libarchive status into an error; the source's own error wins when there is one.
    private func check(_ status: Int32, _ what: @autoclosure () -> String, code: CorralError.Code = .invalidArgument)
        throws
    {
        guard status != ARCHIVE_OK else { return }
        let error: any Error =
            context.takeFailure()
            ?? CorralError(
                code, "\(what()): \(archiveErrorText(archive))",
                hint: code == .invalidArgument ? malformedArchiveHint : nil)
        try fail(error)
    }

    private func fail(_ error: any Error) throws -> Never {
        state = .failed(error)
        currentEntry = nil
        throw error
    }
}

@available(*, unavailable, message: "a TarReader belongs to one thread; create it where it is used")
extension TarReader: Sendable {}

let malformedArchiveHint = "the input must be a complete, uncompressed tar archive"

/// Where libarchive's input comes from. Lives as long as the reader; the C callback reaches
/// it through an unretained pointer. libarchive may look at a block until the next callback,
/// so each chunk is copied into a buffer owned here.
final class ReadContext {
    private let pull: () throws -> [UInt8]?
    private var buffer: UnsafeMutableRawBufferPointer
    private var failure: (any Error)?
    /// Once the source has said "end", or failed, it is not asked again: a source bridged
    /// from a network stream need not cope with being pulled past its end.
    private var ended = false
    private var broken = false

    init(pull: @escaping () throws -> [UInt8]?) {
        self.pull = pull
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: tarChunkSize, alignment: 16)
    }

    deinit {
        buffer.deallocate()
    }

    /// libarchive's read callback: the number of bytes now at `out`, 0 at the end, or -1
    /// after recording why.
    func fill(_ archive: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafeRawPointer?>) -> Int {
        if broken { return -1 }
        if ended { return 0 }
        do {
            while let chunk = try pull() {
                guard !chunk.isEmpty else { continue }  // 0 would mean the end to libarchive
                if chunk.count > buffer.count {
                    buffer.deallocate()
                    buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk.count, alignment: 16)
                }
                chunk.withUnsafeBytes { buffer.copyMemory(from: $0) }
                out.pointee = UnsafeRawPointer(buffer.baseAddress)
                return chunk.count
            }
            ended = true
            return 0
        } catch {
            broken = true
            failure = error
            corral_archive_set_error(archive, EIO, "the tar source failed")
            return -1
        }
    }

    func takeFailure() -> (any Error)? {
        defer { failure = nil }
        return failure
    }
}

/// A file read in 64 KiB chunks; closed when the reader that owns it goes away.
final class FileSource {
    private let fd: Int32
    private let path: String

    init(path: String) throws {
        fd = open(path, O_RDONLY | O_CLOEXEC)
        self.path = path
        guard fd >= 0 else { throw CorralError.posix(errno, "cannot open tar file \(quoted(path))") }
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    func next() throws -> [UInt8]? {
        var failure: Int32 = 0
        let chunk = [UInt8](unsafeUninitializedCapacity: tarChunkSize) { buffer, count in
            guard let base = buffer.baseAddress else { return }
            let got = readRetrying(fd, base, buffer.count)
            if got < 0 { failure = Int32(-got) } else { count = got }
        }
        if failure != 0 { throw CorralError.posix(failure, "cannot read tar file \(quoted(path))") }
        return chunk.isEmpty ? nil : chunk
    }
}
