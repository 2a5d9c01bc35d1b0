import ControlProtocol
import CorralPOSIX
import Glibc

// Just enough tar for the control connection's copies, in corral-init (no libarchive here):
// ustar headers with pax extended headers for what ustar cannot hold. The host checks every
// archive on its own side (`TarValidator` on the way in, `TarExtractor` on the way out), so
// these two only have to be correct, not suspicious; they still refuse names that leave the
// destination.

enum TarFormat {
    static let block = 512

    /// A header block for `name`, preceded by a pax header when the name, link or size does
    /// not fit ustar's fields.
    static func header(
        name: String, type: UInt8, size: Int64, mode: UInt32, uid: Int64, gid: Int64, mtime: Int64,
        linkTarget: String = ""
    ) -> [UInt8] {
        var pax: [(String, String)] = []
        let nameBytes = Array(name.utf8)
        var ustarName = nameBytes
        var prefix: [UInt8] = []
        if nameBytes.count > 100 {
            // Split at a slash into prefix (155) and name (100), if one fits.
            if let split = nameBytes.indices.reversed().first(where: {
                nameBytes[$0] == UInt8(ascii: "/") && $0 <= 155 && nameBytes.count - $0 - 1 <= 100 && $0 > 0
            }) {
                prefix = Array(nameBytes[..<split])
                ustarName = Array(nameBytes[(split + 1)...])
            } else {
                pax.append(("path", name))
                ustarName = Array(nameBytes.prefix(100))
            }
        }
        let linkBytes = Array(linkTarget.utf8)
        if linkBytes.count > 100 { pax.append(("linkpath", linkTarget)) }
        if size >= 0o77777777777 { pax.append(("size", String(size))) }

        var result: [UInt8] = []
        if !pax.isEmpty {
            var records: [UInt8] = []
            for (key, value) in pax { records += record(key, value) }
            result += block(
                name: Array("PaxHeaders/\(name)".utf8.prefix(100)), type: UInt8(ascii: "x"),
                size: Int64(records.count), mode: 0o644, uid: 0, gid: 0, mtime: mtime, link: [], prefix: [])
            result += records
            result += [UInt8](repeating: 0, count: padding(Int64(records.count)))
        }
        result += block(
            name: ustarName, type: type, size: size >= 0o77777777777 ? 0 : size, mode: mode, uid: uid, gid: gid,
            mtime: mtime, link: Array(linkBytes.prefix(100)), prefix: prefix)
        return result
    }

    static func padding(_ size: Int64) -> Int {
        let rest = Int(size % Int64(block))
        return rest == 0 ? 0 : block - rest
    }

    /// A pax record: "LENGTH key=value\n", the length counting itself.
    private static func record(_ key: String, _ value: String) -> [UInt8] {
        let body = " \(key)=\(value)\n".utf8.count
        var length = body + 1
        while String(length).utf8.count + body != length { length = String(length).utf8.count + body }
        return Array("\(length) \(key)=\(value)\n".utf8)
    }

    private static func block(
        name: [UInt8], type: UInt8, size: Int64, mode: UInt32, uid: Int64, gid: Int64, mtime: Int64, link: [UInt8],
        prefix: [UInt8]
    ) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: block)
        func put(_ bytes: [UInt8], at offset: Int, length: Int) {
            for (index, byte) in bytes.prefix(length).enumerated() { header[offset + index] = byte }
        }
        func octal(_ value: Int64, at offset: Int, length: Int) {
            let digits = String(max(value, 0), radix: 8)
            guard digits.utf8.count < length else {
                // Too large for octal (a sandbox's uid is): base-256, as GNU tar and
                // libarchive write and read it.
                header[offset] = 0x80
                for index in 1..<length {
                    header[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * (length - 1 - index)))
                }
                return
            }
            let padded = String(repeating: "0", count: max(0, length - 1 - digits.count)) + digits
            put(Array(padded.utf8), at: offset, length: length - 1)
        }
        put(name, at: 0, length: 100)
        octal(Int64(mode & 0o7777), at: 100, length: 8)
        octal(uid, at: 108, length: 8)
        octal(gid, at: 116, length: 8)
        octal(size, at: 124, length: 12)
        octal(mtime, at: 136, length: 12)
        header[156] = type
        put(link, at: 157, length: 100)
        put(Array("ustar\u{0}00".utf8), at: 257, length: 8)
        put(prefix, at: 345, length: 155)
        for index in 148..<156 { header[index] = UInt8(ascii: " ") }
        let sum = header.reduce(0) { $0 + Int64($1) }
        let digits = String(sum, radix: 8)
        put(Array((String(repeating: "0", count: max(0, 6 - digits.count)) + digits).utf8), at: 148, length: 6)
        header[154] = 0
        header[155] = UInt8(ascii: " ")
        return header
    }

    /// A number field: octal digits (NUL or space ended), or base-256 with the top bit set.
    static func number(_ field: ArraySlice<UInt8>) -> Int64? {
        guard let first = field.first else { return nil }
        if first & 0x80 != 0 {
            var value: Int64 = Int64(first & 0x3F)
            for byte in field.dropFirst() {
                guard value < Int64.max >> 8 else { return nil }
                value = value << 8 | Int64(byte)
            }
            return value
        }
        var value: Int64 = 0
        var seen = false
        for byte in field {
            if byte == 0 || (byte == UInt8(ascii: " ") && seen) { break }
            if byte == UInt8(ascii: " ") { continue }
            guard (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(byte), value < Int64.max >> 3 else { return nil }
            value = value << 3 | Int64(byte - UInt8(ascii: "0"))
            seen = true
        }
        return value
    }

    static func string(_ field: ArraySlice<UInt8>) -> String {
        String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
    }
}

/// Writes a tar of a path, a piece at a time: its last component is the top entry, and a
/// directory brings everything under it. Links are stored as links; special files are left
/// out (the host would refuse them anyway).
final class TarProducer {
    private var pending: [UInt8] = []
    private var pendingStart = 0
    /// Directories being walked: their stream and their name in the archive.
    private var stack: [(directory: OpaquePointer, path: String, archive: String)] = []
    private var file: (fd: Int32, remaining: Int64, padding: Int)?
    private var ended = false

    private init() {}

    static func open(_ path: String) -> Result<TarProducer, ControlFailure> {
        let name = FileOperations.baseName(path)
        guard !name.isEmpty else {
            return .failure(ControlFailure(ControlFailure.Code.badRequest, "cannot archive the root directory"))
        }
        let producer = TarProducer()
        if let failure = producer.add(path: path, archive: name, top: true) { return .failure(failure) }
        return .success(producer)
    }

    /// Queues the header of one entry (and opens what it needs); errors on the top entry only.
    private func add(path: String, archive: String, top: Bool) -> ControlFailure? {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            return top ? FileOperations.systemFailure(errno, "cannot archive \(path)") : nil
        }
        let mtime = Int64(info.st_mtim.tv_sec)
        let mode = UInt32(info.st_mode & 0o7777)
        let (uid, gid) = (Int64(info.st_uid), Int64(info.st_gid))
        switch info.st_mode & S_IFMT {
        case S_IFREG:
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
            guard fd >= 0 else { return top ? FileOperations.systemFailure(errno, "cannot read \(path)") : nil }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
            let size = Int64(info.st_size)
            pending += TarFormat.header(
                name: archive, type: UInt8(ascii: "0"), size: size, mode: mode, uid: uid, gid: gid, mtime: mtime)
            file = (fd, size, TarFormat.padding(size))
        case S_IFDIR:
            guard let directory = opendir(path) else {
                return top ? FileOperations.systemFailure(errno, "cannot list \(path)") : nil
            }
            pending += TarFormat.header(
                name: archive + "/", type: UInt8(ascii: "5"), size: 0, mode: mode, uid: uid, gid: gid, mtime: mtime)
            stack.append((directory, path, archive))
        case S_IFLNK:
            pending += TarFormat.header(
                name: archive, type: UInt8(ascii: "2"), size: 0, mode: mode, uid: uid, gid: gid, mtime: mtime,
                linkTarget: FileOperations.readLink(path))
        default:
            if top {
                return ControlFailure(
                    ControlFailure.Code.system, errno: EINVAL, "\(path) is a special file, which cannot be copied")
            }
        }
        return nil
    }

    /// Up to `limit` bytes of the archive; nil at its end.
    func produce(limit: Int) -> Result<[UInt8]?, ControlFailure> {
        var out: [UInt8] = []
        while out.count < limit {
            if pendingStart < pending.count {
                let take = min(limit - out.count, pending.count - pendingStart)
                out += pending[pendingStart..<(pendingStart + take)]
                pendingStart += take
                if pendingStart == pending.count {
                    pending.removeAll(keepingCapacity: true)
                    pendingStart = 0
                }
                continue
            }
            if let current = file {
                if current.remaining > 0 {
                    let want = Int(min(Int64(limit - out.count), current.remaining))
                    var chunk = [UInt8](repeating: 0, count: want)
                    let count = chunk.withUnsafeMutableBytes { read(current.fd, $0.baseAddress, want) }
                    if count < 0 && errno == EINTR { continue }
                    if count <= 0 {
                        // The file shrank while it was read: pad with zeros to the size
                        // announced, as tar does.
                        out += [UInt8](repeating: 0, count: want)
                        file?.remaining -= Int64(want)
                    } else {
                        out += chunk[0..<count]
                        file?.remaining -= Int64(count)
                    }
                    continue
                }
                pending += [UInt8](repeating: 0, count: current.padding)
                Glibc.close(current.fd)
                file = nil
                continue
            }
            if let top = stack.last {
                if let entry = readdir(top.directory) {
                    let name = DirectoryEntry.name(entry)
                    if name == "." || name == ".." { continue }
                    _ = add(path: top.path + "/" + name, archive: top.archive + "/" + name, top: false)
                } else {
                    closedir(top.directory)
                    stack.removeLast()
                }
                continue
            }
            if !ended {
                ended = true
                pending += [UInt8](repeating: 0, count: TarFormat.block * 2)
                continue
            }
            break
        }
        return .success(out.isEmpty ? nil : out)
    }

    func close() {
        if let current = file { Glibc.close(current.fd) }
        file = nil
        for entry in stack { closedir(entry.directory) }
        stack = []
    }
}

/// Unpacks a tar into a directory as its bytes come. Entries go in as the sandbox's user;
/// names that are absolute or hold `..` are refused.
final class TarUnpacker {
    let directory: String
    private var header: [UInt8] = []
    private enum State {
        case header
        /// A file's data, or a pax or long-name header's (collected), then padding.
        case data(remaining: Int64, padding: Int)
        case collect(kind: UInt8, remaining: Int64, padding: Int)
        case skip(remaining: Int64)
        case end
    }
    private var state = State.header
    private var collected: [UInt8] = []
    private var fd: Int32 = -1
    private var current = ""
    private var currentMode: UInt32 = 0
    private var paxPath: String?
    private var paxLink: String?
    private var paxSize: Int64?
    private var zeroBlocks = 0
    /// Directories whose mode is set at the end, so that a read-only one can be filled first.
    private var directoryModes: [(String, UInt32)] = []

    init(directory: String) {
        self.directory = directory == "/" ? "" : directory
    }

    /// Takes the next bytes of the archive; a failure ends it.
    func feed(_ bytes: ArraySlice<UInt8>) -> ControlFailure? {
        var index = bytes.startIndex
        while index < bytes.endIndex {
            switch state {
            case .end:
                return nil
            case .header:
                let take = min(TarFormat.block - header.count, bytes.endIndex - index)
                header += bytes[index..<(index + take)]
                index += take
                if header.count == TarFormat.block {
                    let block = header
                    header = []
                    if let failure = begin(block) { return failure }
                }
            case .data(let remaining, let padding):
                let take = Int(min(Int64(bytes.endIndex - index), remaining))
                if take > 0 {
                    if fd >= 0, let error = writeAll(fd, bytes[index..<(index + take)]) {
                        return FileOperations.systemFailure(error, "cannot write \(current)")
                    }
                    index += take
                }
                let left = remaining - Int64(take)
                if left == 0 {
                    endFile()
                    state = padding > 0 ? .skip(remaining: Int64(padding)) : .header
                } else {
                    state = .data(remaining: left, padding: padding)
                }
            case .collect(let kind, let remaining, let padding):
                let take = Int(min(Int64(bytes.endIndex - index), remaining))
                collected += bytes[index..<(index + take)]
                index += take
                let left = remaining - Int64(take)
                if left == 0 {
                    extended(kind)
                    state = padding > 0 ? .skip(remaining: Int64(padding)) : .header
                } else {
                    state = .collect(kind: kind, remaining: left, padding: padding)
                }
            case .skip(let remaining):
                let take = Int(min(Int64(bytes.endIndex - index), remaining))
                index += take
                state = remaining - Int64(take) == 0 ? .header : .skip(remaining: remaining - Int64(take))
            }
        }
        return nil
    }

    /// The archive's bytes ended: it must have ended too.
    func finish() -> ControlFailure? {
        let complete: Bool
        switch state {
        case .end: complete = true
        case .header: complete = header.isEmpty
        default: complete = false
        }
        guard complete else {
            return ControlFailure(ControlFailure.Code.badRequest, "the archive ends in the middle of an entry")
        }
        for (path, mode) in directoryModes.reversed() { _ = chmod(path, mode_t(mode)) }
        return nil
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    private func begin(_ block: [UInt8]) -> ControlFailure? {
        if block.allSatisfy({ $0 == 0 }) {
            zeroBlocks += 1
            if zeroBlocks == 2 { state = .end }
            return nil
        }
        zeroBlocks = 0
        var sum: Int64 = 0
        for (index, byte) in block.enumerated() {
            sum += (148..<156).contains(index) ? Int64(UInt8(ascii: " ")) : Int64(byte)
        }
        guard TarFormat.number(block[148..<156]) == sum else {
            return ControlFailure(ControlFailure.Code.badRequest, "a tar header with a wrong checksum")
        }
        let type = block[156]
        guard var size = TarFormat.number(block[124..<136]), size >= 0 else {
            return ControlFailure(ControlFailure.Code.badRequest, "a tar header with a malformed size")
        }
        let padding = TarFormat.padding(size)
        switch type {
        case UInt8(ascii: "x"), UInt8(ascii: "L"), UInt8(ascii: "K"):
            guard size <= 1 << 20 else {
                return ControlFailure(ControlFailure.Code.badRequest, "a tar extended header larger than 1 MiB")
            }
            collected = []
            state = size > 0 ? .collect(kind: type, remaining: size, padding: padding) : .header
            return nil
        case UInt8(ascii: "g"):
            state = size > 0 ? .skip(remaining: size + Int64(padding)) : .header
            return nil
        default:
            break
        }
        if let paxSize { size = paxSize }
        var name = TarFormat.string(block[0..<100])
        let magic = TarFormat.string(block[257..<263])
        if magic.hasPrefix("ustar") {
            let prefix = TarFormat.string(block[345..<500])
            if !prefix.isEmpty { name = prefix + "/" + name }
        }
        if let paxPath { name = paxPath }
        var link = TarFormat.string(block[157..<257])
        if let paxLink { link = paxLink }
        paxPath = nil
        paxLink = nil
        paxSize = nil
        let mode = UInt32(TarFormat.number(block[100..<108]) ?? 0o644) & 0o7777

        let parts = name.split(separator: "/").filter { $0 != "." }
        guard !name.hasPrefix("/"), !parts.contains("..") else {
            return ControlFailure(ControlFailure.Code.badRequest, "tar entry '\(name)' leaves the destination")
        }
        let skipData = size > 0 ? State.skip(remaining: size + Int64(TarFormat.padding(size))) : State.header
        guard !parts.isEmpty else {
            state = skipData
            return nil
        }
        let target = directory + "/" + parts.joined(separator: "/")
        // Archives need not list the directories their files are in (`tar` makes them).
        if let failure = makeParents(parts) { return failure }
        switch type {
        case UInt8(ascii: "0"), 0, UInt8(ascii: "7"):
            var info = stat()
            if lstat(target, &info) == 0 && info.st_mode & S_IFMT != S_IFDIR { unlink(target) }
            fd = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { return FileOperations.systemFailure(errno, "cannot write \(target)") }
            current = target
            currentMode = mode
            if size == 0 {
                endFile()
                state = .header
            } else {
                state = .data(remaining: size, padding: TarFormat.padding(size))
            }
        case UInt8(ascii: "5"):
            if mkdir(target, 0o700) != 0 {
                var info = stat()
                guard errno == EEXIST, stat(target, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
                    return FileOperations.systemFailure(errno, "cannot make the directory \(target)")
                }
            }
            directoryModes.append((target, mode))
            state = skipData
        case UInt8(ascii: "2"):
            var info = stat()
            if lstat(target, &info) == 0 && info.st_mode & S_IFMT != S_IFDIR { unlink(target) }
            guard symlink(link, target) == 0 else {
                return FileOperations.systemFailure(errno, "cannot make the link \(target)")
            }
            state = skipData
        case UInt8(ascii: "1"):
            let linkParts = link.split(separator: "/").filter { $0 != "." }
            guard !link.hasPrefix("/"), !linkParts.contains("..") else {
                return ControlFailure(ControlFailure.Code.badRequest, "tar hard link '\(name)' leaves the destination")
            }
            var info = stat()
            if lstat(target, &info) == 0 && info.st_mode & S_IFMT != S_IFDIR { unlink(target) }
            guard Glibc.link(directory + "/" + linkParts.joined(separator: "/"), target) == 0 else {
                return FileOperations.systemFailure(errno, "cannot make the hard link \(target)")
            }
            state = skipData
        default:
            // Devices, FIFOs and the like: the host refuses them before they get here.
            state = skipData
        }
        return nil
    }

    /// Makes the directories above an entry that do not exist yet, as `tar` does (mode 0755,
    /// before the umask).
    private func makeParents(_ parts: [Substring]) -> ControlFailure? {
        var path = directory
        for part in parts.dropLast() {
            path += "/" + part
            if mkdir(path, 0o755) == 0 { continue }
            let failure = errno
            var info = stat()
            guard failure == EEXIST, stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
                return FileOperations.systemFailure(
                    failure == EEXIST ? ENOTDIR : failure, "cannot make the directory \(path)")
            }
        }
        return nil
    }

    private func endFile() {
        guard fd >= 0 else { return }
        _ = fchmod(fd, mode_t(currentMode))
        Glibc.close(fd)
        fd = -1
    }

    private func extended(_ kind: UInt8) {
        if kind == UInt8(ascii: "L") {
            paxPath = TarFormat.string(collected[...])
            return
        }
        if kind == UInt8(ascii: "K") {
            paxLink = TarFormat.string(collected[...])
            return
        }
        // Records: "LENGTH key=value\n".
        var index = 0
        while index < collected.count {
            guard let space = collected[index...].firstIndex(of: UInt8(ascii: " ")),
                let length = Int(String(decoding: collected[index..<space], as: UTF8.self)), length > 0,
                index + length <= collected.count
            else { return }
            let record = collected[(space + 1)..<(index + length - 1)]
            if let equals = record.firstIndex(of: UInt8(ascii: "=")) {
                let key = String(decoding: record[record.startIndex..<equals], as: UTF8.self)
                let value = String(decoding: record[(equals + 1)...], as: UTF8.self)
                switch key {
                case "path": paxPath = value
                case "linkpath": paxLink = value
                case "size": paxSize = Int64(value)
                default: break
                }
            }
            index += length
        }
    }
}
