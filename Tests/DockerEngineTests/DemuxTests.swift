import DockerEngine
import Testing

@Suite("Demultiplexing the engine's stdout/stderr stream")
struct DemuxTests {
    static func frame(_ stream: UInt8, _ text: String) -> [UInt8] {
        let payload = Array(text.utf8)
        let length = UInt32(payload.count)
        return [
            stream, 0, 0, 0, UInt8(length >> 24), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff),
            UInt8(length & 0xff),
        ]
            + payload
    }

    /// Feeds `bytes` in pieces of the given sizes (cycling) and joins what comes out per stream.
    static func demux(_ bytes: [UInt8], pieces: [Int]) throws -> (String, String, Bool) {
        var demuxer = StreamDemuxer()
        var stdout: [UInt8] = []
        var stderr: [UInt8] = []
        var offset = 0
        var index = 0
        while offset < bytes.count {
            let size = max(1, pieces[index % pieces.count])
            let end = min(bytes.count, offset + size)
            for (stream, payload) in try demuxer.push(bytes[offset..<end]) {
                if stream == .stderr { stderr += payload } else { stdout += payload }
            }
            offset = end
            index += 1
        }
        return (
            String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self), demuxer.isAtFrameBoundary
        )
    }

    @Test(
        "frames split at every odd boundary come out whole and in order",
        arguments: [[1], [3], [7], [8], [9], [1, 2, 3, 5, 8, 13], [1000]])
    func oddBoundaries(pieces: [Int]) throws {
        let long = String(repeating: "z", count: 70_000)
        let bytes =
            Self.frame(1, "hello ") + Self.frame(2, "warn\n") + Self.frame(1, "world\n") + Self.frame(1, long)
            + Self.frame(2, "") + Self.frame(2, "done")
        let (stdout, stderr, boundary) = try Self.demux(bytes, pieces: pieces)
        #expect(stdout == "hello world\n" + long)
        #expect(stderr == "warn\ndone")
        #expect(boundary)
    }

    @Test("a stream cut inside a frame is not at a frame boundary")
    func truncated() throws {
        let bytes = Array(Self.frame(1, "abcdef").prefix(10))
        let (stdout, _, boundary) = try Self.demux(bytes, pieces: [4])
        #expect(stdout == "ab")
        #expect(!boundary)
    }

    @Test("a corrupt header is refused rather than misread")
    func corrupt() {
        var demuxer = StreamDemuxer()
        #expect(throws: StreamDemuxer.DemuxError.self) { _ = try demuxer.push([9, 0, 0, 0, 0, 0, 0, 1, 65]) }
        var other = StreamDemuxer()
        #expect(throws: StreamDemuxer.DemuxError.self) { _ = try other.push([1, 1, 0, 0, 0, 0, 0, 1, 65]) }
    }
}
