import CorralCore
import Foundation
import TarArchive
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// An archive built in memory with `TarWriter`.
func makeArchive(_ build: (TarWriter) throws -> Void) throws -> [UInt8] {
    let writer = try TarWriter()
    try build(writer)
    return try writer.finish()
}

/// Reads every entry of an archive, with the data of files.
func readAll(_ reader: TarReader) throws -> [(entry: TarEntry, data: [UInt8])] {
    var result: [(TarEntry, [UInt8])] = []
    while let entry = try reader.nextEntry() {
        result.append((entry, try reader.readData(maxBytes: 64 << 20)))
    }
    return result
}

/// ustar headers made byte by byte, for entries `TarWriter` will not write (devices, FIFOs).
enum RawTar {
    static func header(name: String, type: Character, mode: Int = 0o644, size: Int = 0, link: String = "") -> [UInt8] {
        var block = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int, width: Int) {
            for (index, byte) in text.utf8.prefix(width).enumerated() { block[offset + index] = byte }
        }
        func octal(_ value: Int, at offset: Int, width: Int) {
            let digits = String(value, radix: 8)
            put(String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits, at: offset, width: width - 1)
        }
        put(name, at: 0, width: 100)
        octal(mode, at: 100, width: 8)
        octal(0, at: 108, width: 8)
        octal(0, at: 116, width: 8)
        octal(size, at: 124, width: 12)
        octal(1_700_000_000, at: 136, width: 12)
        put("        ", at: 148, width: 8)
        block[156] = type.asciiValue ?? 0
        put(link, at: 157, width: 100)
        put("ustar", at: 257, width: 6)
        put("00", at: 263, width: 2)
        octal(1, at: 329, width: 8)
        octal(3, at: 337, width: 8)
        let sum = block.reduce(0) { $0 + Int($1) }
        let digits = String(sum, radix: 8)
        put(String(repeating: "0", count: max(0, 6 - digits.count)) + digits, at: 148, width: 6)
        block[154] = 0
        block[155] = 0x20
        return block
    }

    /// A file header whose size field holds `size` in base-256 (GNU's form for sizes that
    /// octal cannot hold), with no data after it: a header that lies about a huge entry.
    static func hugeFileHeader(name: String, size: Int64) -> [UInt8] {
        var block = header(name: name, type: "0")
        block[124] = 0x80
        for index in 0..<8 { block[135 - index] = UInt8(truncatingIfNeeded: size >> (8 * index)) }
        for index in 125..<128 { block[index] = 0 }
        for index in 148..<156 { block[index] = 0x20 }
        let digits = String(block.reduce(0) { $0 + Int($1) }, radix: 8)
        for (index, byte) in (String(repeating: "0", count: max(0, 6 - digits.count)) + digits).utf8.enumerated() {
            block[148 + index] = byte
        }
        block[154] = 0
        return block
    }

    /// A file entry: header, data, padding to the next block.
    static func file(name: String, contents: [UInt8]) -> [UInt8] {
        let padding = (512 - contents.count % 512) % 512
        return header(name: name, type: "0", size: contents.count) + contents + [UInt8](repeating: 0, count: padding)
    }

    static let end = [UInt8](repeating: 0, count: 1024)
}

/// Every path under `root` (not following links) with a short description of what is there.
func snapshot(_ root: URL) throws -> [String: String] {
    var result: [String: String] = [:]
    func visit(_ relative: String) throws {
        let path = relative.isEmpty ? root.path : root.path + "/" + relative
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        let mode = String(info.st_mode & 0o7777, radix: 8)
        switch info.st_mode & S_IFMT {
        case S_IFDIR:
            if !relative.isEmpty { result[relative] = "dir \(mode)" }
            for name in try FileManager.default.contentsOfDirectory(atPath: path).sorted() {
                try visit(relative.isEmpty ? name : relative + "/" + name)
            }
        case S_IFLNK:
            result[relative] = "link -> " + (try FileManager.default.destinationOfSymbolicLink(atPath: path))
        case S_IFREG:
            let data = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            result[relative] = "file \(mode) \(String(decoding: data.prefix(64), as: UTF8.self)) (\(data.count) bytes)"
        default:
            result[relative] = "special"
        }
    }
    try visit("")
    return result
}

/// A temporary directory laid out for escape attempts: `target/` to extract into, and
/// `outside/sentinel` that nothing may touch.
struct Playground {
    let base: URL
    var target: URL { base.appendingPathComponent("target") }
    var outside: URL { base.appendingPathComponent("outside") }

    init(_ base: URL) throws {
        self.base = base
        try FileManager.default.createDirectory(
            at: base.appendingPathComponent("target"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(
            at: base.appendingPathComponent("outside"), withIntermediateDirectories: true)
        try Data("untouched\n".utf8).write(to: base.appendingPathComponent("outside/sentinel"))
    }

    /// Everything outside `target/`.
    func outsideSnapshot() throws -> [String: String] {
        try snapshot(base).filter { !$0.key.hasPrefix("target/") }
    }
}

/// Asserts that `body` throws a `CorralError` with `code` whose message names `entry`.
@discardableResult
func expectError(
    _ code: CorralError.Code, naming entry: String, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) -> CorralError? {
    do {
        try body()
        Issue.record("expected a \(code) error naming '\(entry)', got success", sourceLocation: sourceLocation)
    } catch let error as CorralError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        #expect(
            error.message.contains("'\(entry)'"), "message does not name the entry: \(error.message)",
            sourceLocation: sourceLocation)
        #expect(!error.message.contains("\n"), sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected a CorralError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

let fixedTime = Date(timeIntervalSince1970: 1_700_000_000)

var runningAsRoot: Bool { geteuid() == 0 }

/// Where `path` leads once every symlink is followed; nil when it leads nowhere.
func resolvedPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
}
