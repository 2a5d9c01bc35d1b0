import CArchive
import CorralCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Size of the chunks TarArchive moves at a time: file reads, entry data, sink writes.
let tarChunkSize = 64 * 1024

/// Opens libarchive on first use (see carchive.h for why not at start); cheap after that.
/// Throws when the library cannot be loaded.
func loadLibarchive() throws {
    var error = [CChar](repeating: 0, count: 512)
    guard corral_archive_load(&error, error.count) == 0 else {
        let reason = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        throw CorralError(.unavailable, reason, hint: "install libarchive (apt-get install libarchive13)")
    }
}

/// A UTF-8 `LC_CTYPE` for the calling thread while libarchive runs (see carchive.h for why).
///
/// Owned by one reader or writer; `uselocale` only affects the calling thread, so the
/// process locale and other threads are never touched.
final class ArchiveLocale {
    private let locale: locale_t?

    init() {
        locale = corral_archive_new_utf8_locale()
    }

    deinit {
        if let locale { freelocale(locale) }
    }

    func run<T>(_ body: () throws -> T) rethrows -> T {
        guard let locale else { return try body() }
        let previous = uselocale(locale)
        defer { uselocale(previous) }
        return try body()
    }
}

/// The text libarchive left for its last failure, or a fallback when it left none.
func archiveErrorText(_ archive: OpaquePointer?) -> String {
    guard let archive, let text = corral_archive_error_string(archive) else { return "libarchive gave no detail" }
    return String(cString: text)
}

extension CorralError {
    /// An error for an `errno` value: permission problems, full disks and missing files
    /// keep their own codes so that callers can tell them apart.
    static func posix(_ number: Int32, _ message: String, hint: String? = nil) -> CorralError {
        let code: Code
        switch number {
        case EACCES, EPERM, EROFS: code = .permissionDenied
        case ENOSPC, EDQUOT, EMFILE, ENFILE, EFBIG: code = .resourceExhausted
        case ENOENT: code = .notFound
        default: code = .io
        }
        return CorralError(code, "\(message): \(String(cString: strerror(number)))", hint: hint)
    }
}

/// Renders an entry name for a one-line message: quoted, with control characters escaped so a
/// hostile name cannot break the line or forge another one.
func quoted(_ name: String) -> String {
    var text = "'"
    for scalar in name.unicodeScalars {
        switch scalar {
        case "'": text += "\\'"
        case "\\": text += "\\\\"
        case _ where scalar.value < 0x20 || scalar.value == 0x7F || (0x80..<0xA0).contains(scalar.value):
            text += "\\u{\(String(scalar.value, radix: 16))}"
        default: text.unicodeScalars.append(scalar)
        }
    }
    return text + "'"
}

/// A C string from libarchive as Swift text; nil when absent, `.invalid` when not UTF-8.
enum ArchiveText {
    case absent
    case text(String)
    case invalid([UInt8])

    init(_ pointer: UnsafePointer<CChar>?) {
        guard let pointer else {
            self = .absent
            return
        }
        if let string = String(validatingCString: pointer) {
            self = .text(string)
        } else {
            let length = strlen(pointer)
            self = .invalid(
                pointer.withMemoryRebound(to: UInt8.self, capacity: length) {
                    Array(UnsafeBufferPointer(start: $0, count: length))
                })
        }
    }
}

/// A time as tar and the kernel hold it: whole seconds plus nanoseconds in 0..<1e9 (floor
/// division, so times before 1970 stay valid `timespec`s).
struct TarTimestamp: Sendable, Equatable {
    var seconds: Int64
    var nanoseconds: Int64

    init(seconds: Int64, nanoseconds: Int64) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    /// Any `Double` is accepted: out-of-range and non-finite times are clamped (to 0 for NaN),
    /// never trapped on, since they can come from a caller's `Date`.
    init(secondsSince1970 interval: Double) {
        let limit = 9_000_000_000_000_000.0  // well inside Int64, far past any real time
        let clamped = interval.isNaN ? 0 : min(limit, max(-limit, interval))
        let whole = clamped.rounded(.down)
        seconds = Int64(whole)
        nanoseconds = min(999_999_999, max(0, Int64(((clamped - whole) * 1_000_000_000).rounded())))
    }

    var cTimespec: timespec {
        timespec(tv_sec: Int(seconds), tv_nsec: Int(nanoseconds))
    }
}

/// Writes all of `count` bytes to `fd`, retrying short writes and EINTR.
func writeFully(_ fd: Int32, _ base: UnsafeRawPointer, _ count: Int) -> Int32? {
    var done = 0
    while done < count {
        let written = write(fd, base + done, count - done)
        if written < 0 {
            if errno == EINTR { continue }
            return errno
        }
        done += written
    }
    return nil
}

/// Reads up to `count` bytes from `fd`, retrying EINTR; returns the count or `-errno`.
func readRetrying(_ fd: Int32, _ base: UnsafeMutableRawPointer, _ count: Int) -> Int {
    while true {
        let got = read(fd, base, count)
        if got < 0 && errno == EINTR { continue }
        return got < 0 ? -Int(errno) : got
    }
}

/// `S_IF*` file type bits, spelled once: both Glibc and libarchive's headers export the C
/// macros, with different Swift types, so the bare names are ambiguous here.
enum FileTypeBits {
    static let mask: UInt32 = 0o170000
    static let regular: UInt32 = 0o100000
    static let directory: UInt32 = 0o040000
    static let symlink: UInt32 = 0o120000
    static let characterDevice: UInt32 = 0o020000
    static let blockDevice: UInt32 = 0o060000
    static let fifo: UInt32 = 0o010000
    static let socket: UInt32 = 0o140000

    static func of(_ info: stat) -> UInt32 { UInt32(info.st_mode) & mask }
}
