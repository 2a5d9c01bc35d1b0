import CorralCore
import Foundation
import TarArchive

/// Tars between the host's file system and a byte stream, on threads of their own: used by
/// `Sandbox`'s copies and by the command line when the copy goes through the service.
public enum HostArchive {
    /// Writes a tar of `source` (a file or a directory, named `name` in the archive, every
    /// entry owned by `ownership` when given) on its own thread and hands it, as a stream, to
    /// `send`. The writer's error (an unreadable file, say) wins over the sender's.
    @discardableResult
    public static func stream(
        _ source: URL, as name: String, ownership: TarOwnership?,
        into send: (AsyncThrowingStream<[UInt8], any Error>) async throws -> Void
    ) async throws -> Int64 {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: source.path, isDirectory: &isDirectory) else {
            throw CorralError.notFound("no such file on the host: \(source.path)")
        }
        return try await stream(
            producing: { writer in try writer.addTree(from: source, as: name, ownership: ownership).bytes }, into: send)
    }

    /// Runs `produce` against a tar writer on its own thread and streams what it writes.
    static func stream(
        producing produce: @escaping @Sendable (TarWriter) throws -> Int64,
        into send: (AsyncThrowingStream<[UInt8], any Error>) async throws -> Void
    ) async throws -> Int64 {
        let channel = ByteChannel()
        let producer = Task {
            try await runOnThread(name: "corral-tar") {
                do {
                    let writer = try TarWriter(sink: { try channel.blockingSend($0) })
                    let bytes = try produce(writer)
                    _ = try writer.finish()
                    channel.finish()
                    return bytes
                } catch {
                    channel.finish(throwing: error)
                    throw error
                }
            }
        }
        do {
            try await send(channel.asyncStream())
        } catch {
            channel.cancel()
            if case .failure(let producerError) = await producer.result { throw producerError }
            throw error
        }
        channel.cancel()
        return try await producer.value
    }

    /// Extracts the tar that `receive` feeds into a channel. When `destination` is an existing
    /// directory the archive's single top-level entry lands inside it; otherwise it becomes
    /// `destination`. Extraction goes to a fresh directory beside the destination first, so a
    /// refused archive (an entry with `..`, a link out) leaves nothing behind.
    @discardableResult
    public static func extract(to destination: URL, from receive: (ByteChannel) async throws -> Void) async throws
        -> Int64
    {
        var isDirectory: ObjCBool = false
        let intoExisting =
            FileManager.default.fileExists(atPath: destination.path, isDirectory: &isDirectory) && isDirectory.boolValue
        let parent = intoExisting ? destination : destination.deletingLastPathComponent()
        guard FileManager.default.fileExists(atPath: parent.path) else {
            throw CorralError.notFound("no such directory on the host: \(parent.path)")
        }
        let staging = parent.appendingPathComponent(".corral-cp-\(UUID().uuidString.prefix(8))", isDirectory: true)
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(at: staging) }
        let (bytes, top) = try await consume(from: receive) { channel in
            let summary = try TarExtractor.extract(
                from: TarReader(pull: { try channel.blockingReceive() }), into: staging)
            return (summary.bytes, try FileManager.default.contentsOfDirectory(atPath: staging.path))
        }
        guard top.count == 1, let name = top.first else {
            throw CorralError(.engine, "the archive has \(top.count) top-level entries, expected 1")
        }
        let target = intoExisting ? destination.appendingPathComponent(name) : destination
        if FileManager.default.fileExists(atPath: target.path) {
            var targetIsDirectory: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: target.path, isDirectory: &targetIsDirectory)
            guard !targetIsDirectory.boolValue else {
                throw CorralError(.alreadyExists, "\(target.path) already exists and is a directory")
            }
            try FileManager.default.removeItem(at: target)
        }
        try FileManager.default.moveItem(at: staging.appendingPathComponent(name), to: target)
        return bytes
    }

    /// Feeds a channel from `receive` while `consume` reads it on its own thread. The
    /// consumer's error (a refused entry) wins over the feeder's.
    static func consume<T: Sendable>(
        from receive: (ByteChannel) async throws -> Void, _ consume: @escaping @Sendable (ByteChannel) throws -> T
    ) async throws -> T {
        let channel = ByteChannel()
        let consumer = Task {
            try await runOnThread(name: "corral-tar") {
                do {
                    let value = try consume(channel)
                    // The archive may end before the stream does (trailing padding): drain it,
                    // so the feeder finishes cleanly.
                    while try channel.blockingReceive() != nil {}
                    return value
                } catch {
                    channel.cancel()
                    throw error
                }
            }
        }
        do {
            try await receive(channel)
            channel.finish()
        } catch {
            channel.cancel()
            if case .failure(let consumerError) = await consumer.result,
                (consumerError as? CorralError)?.code != .cancelled
            {
                throw consumerError
            }
            throw error
        }
        return try await consumer.value
    }
}
