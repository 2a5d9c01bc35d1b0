#if canImport(Glibc)
import Glibc
#endif

/// The name in a readdir(3) entry, read in place.
///
/// `entry.pointee.d_name` copies the whole 256-byte array, but readdir's records are only as
/// long as their name (`d_reclen`, often 24 bytes): reading a record at the end of glibc's
/// buffer that way runs past it, and crashes when the next page is unmapped. That is how
/// Foundation's Process crashed (swift-corelibs-foundation PR 5472). These read up to the
/// name's terminating zero and no further.
public enum DirectoryEntry {
    // d_name is a stored field of a C struct, so the offset exists; 19 is glibc's on Linux.
    private static let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name) ?? 19

    /// The name's bytes, without the terminating zero (file names need not be UTF-8).
    public static func nameBytes(_ entry: UnsafeMutablePointer<dirent>) -> [UInt8] {
        let name = UnsafeRawPointer(entry).advanced(by: nameOffset).assumingMemoryBound(to: UInt8.self)
        return Array(
            UnsafeBufferPointer(start: name, count: strlen(UnsafeRawPointer(name).assumingMemoryBound(to: CChar.self))))
    }

    /// The name as a String (invalid UTF-8 repaired).
    public static func name(_ entry: UnsafeMutablePointer<dirent>) -> String {
        String(decoding: nameBytes(entry), as: UTF8.self)
    }
}
