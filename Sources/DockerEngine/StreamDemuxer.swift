/// Which stream a piece of exec or attach output came from.
public enum StdioStream: UInt8, Sendable, Hashable {
    case stdin = 0
    case stdout = 1
    case stderr = 2
}

/// Splits the engine's multiplexed stream into stdout and stderr.
///
/// Each frame is an 8-byte header `[stream, 0, 0, 0, length as u32 big-endian]` followed by
/// `length` bytes. Frames do not line up with network reads, so the demuxer keeps a partial
/// header between calls and hands out payload bytes as soon as they arrive.
public struct StreamDemuxer: Sendable {
    private var header: [UInt8] = []
    private var stream: StdioStream = .stdout
    private var remaining = 0

    public init() {}

    /// Feeds the next bytes read; returns the payload pieces they complete, in order.
    public mutating func push(_ bytes: some Collection<UInt8>) throws -> [(StdioStream, [UInt8])] {
        var output: [(StdioStream, [UInt8])] = []
        var index = bytes.startIndex
        while index != bytes.endIndex {
            if remaining > 0 {
                let available = bytes.distance(from: index, to: bytes.endIndex)
                let take = min(available, remaining)
                let end = bytes.index(index, offsetBy: take)
                let piece = Array(bytes[index..<end])
                if let last = output.last, last.0 == stream {
                    output[output.count - 1].1.append(contentsOf: piece)
                } else {
                    output.append((stream, piece))
                }
                remaining -= take
                index = end
                continue
            }
            header.append(bytes[index])
            index = bytes.index(after: index)
            if header.count == 8 {
                guard let kind = StdioStream(rawValue: header[0]), header[1] == 0, header[2] == 0, header[3] == 0 else {
                    throw DemuxError(header: header)
                }
                stream = kind
                remaining = Int(header[4]) << 24 | Int(header[5]) << 16 | Int(header[6]) << 8 | Int(header[7])
                header.removeAll(keepingCapacity: true)
            }
        }
        return output
    }

    /// True when the stream ended between frames, as a well-formed stream does.
    public var isAtFrameBoundary: Bool { header.isEmpty && remaining == 0 }

    public struct DemuxError: Error, CustomStringConvertible {
        public var header: [UInt8]
        public var description: String {
            "malformed multiplexed stream: frame header \(header.map { String($0) }.joined(separator: ","))"
        }
    }
}
