import CorralCore
import Foundation
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A push body kept on disk while it is checked, then read back to go upstream. Reads and
/// writes run on NIO's blocking-I/O thread pool, never on the cooperative pool.
final class SpoolFile: Sendable {
    let url: URL
    private let fd: Int32
    private let pool: NIOThreadPool

    init(url: URL, pool: NIOThreadPool = .singleton) throws {
        let fd = open(url.path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw AtomicFile.ioError("cannot create the spool file \(url.path)") }
        self.url = url
        self.fd = fd
        self.pool = pool
    }

    deinit { close(fd) }

    func append(_ buffer: ByteBuffer) async throws {
        let fd = self.fd
        let path = url.path
        try await pool.runIfActive {
            try buffer.withUnsafeReadableBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = write(fd, bytes.baseAddress.map { $0 + offset }, bytes.count - offset)
                    if written < 0 {
                        if errno == EINTR { continue }
                        throw AtomicFile.ioError("cannot write the spool file \(path)")
                    }
                    offset += written
                }
            }
        }
    }

    /// Up to `count` bytes from `offset`; fewer at the end of the file.
    func read(at offset: Int64, count: Int) async throws -> [UInt8] {
        let fd = self.fd
        let path = url.path
        return try await pool.runIfActive {
            var bytes = [UInt8](repeating: 0, count: count)
            var filled = 0
            while filled < count {
                let got = bytes.withUnsafeMutableBytes { raw in
                    pread(fd, raw.baseAddress.map { $0 + filled }, count - filled, off_t(offset) + off_t(filled))
                }
                if got < 0 {
                    if errno == EINTR { continue }
                    throw AtomicFile.ioError("cannot read the spool file \(path)")
                }
                if got == 0 { break }
                filled += got
            }
            bytes.removeLast(count - filled)
            return bytes
        }
    }

    /// The file from `offset` to its end, in chunks, for an upload body.
    func stream(from start: Int64 = 0, chunkSize: Int = 256 * 1024) -> AsyncThrowingStream<[UInt8], any Error> {
        let position = Mutex(start)
        return AsyncThrowingStream { [self] in
            let offset = position.withLock { $0 }
            let chunk = try await read(at: offset, count: chunkSize)
            guard !chunk.isEmpty else { return nil }
            position.withLock { $0 += Int64(chunk.count) }
            return chunk
        }
    }
}
