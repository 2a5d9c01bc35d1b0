import ControlProtocol

/// A command's recent output, addressed by byte offsets counted from its start (stdout and
/// stderr in one sequence, in the order they were read). The oldest bytes go once the ring
/// holds more than its capacity; an attach from an offset before `start` is told how many
/// are gone.
struct OutputRing {
    /// Which stream a piece came from.
    enum Source: UInt8 {
        case stdout, stderr
    }

    private struct Piece {
        var source: Source
        var offset: Int64
        var bytes: [UInt8]
        var end: Int64 { offset + Int64(bytes.count) }
    }

    private var pieces: [Piece] = []
    private var head = 0
    /// The first offset still held.
    private(set) var start: Int64 = 0
    /// The offset just past the last byte read.
    private(set) var end: Int64 = 0

    /// Bytes held.
    var count: Int { Int(end - start) }

    mutating func append(_ bytes: ArraySlice<UInt8>, from source: Source) {
        guard !bytes.isEmpty else { return }
        // Small reads of one stream in a row join one piece, up to a frame's size.
        if head < pieces.count, pieces[pieces.count - 1].source == source,
            pieces[pieces.count - 1].bytes.count + bytes.count <= ControlFrameHeader.maxSandboxPayload
        {
            pieces[pieces.count - 1].bytes.append(contentsOf: bytes)
        } else {
            pieces.append(Piece(source: source, offset: end, bytes: Array(bytes)))
        }
        end += Int64(bytes.count)
    }

    /// Forgets everything before `offset` (clamped to what is held).
    mutating func drop(before offset: Int64) {
        let target = min(max(offset, start), end)
        while head < pieces.count, pieces[head].end <= target { head += 1 }
        if head < pieces.count, pieces[head].offset < target {
            let cut = Int(target - pieces[head].offset)
            pieces[head].bytes.removeFirst(cut)
            pieces[head].offset = target
        }
        start = target
        if head > 64 && head * 2 > pieces.count {
            pieces.removeFirst(head)
            head = 0
        }
    }

    /// Forgets everything.
    mutating func clear() {
        pieces = []
        head = 0
        start = end
    }

    /// Up to `limit` bytes from `offset` on, all from one stream; nil when there are none.
    func read(from offset: Int64, limit: Int) -> (Source, ArraySlice<UInt8>)? {
        guard offset >= start, offset < end, limit > 0 else { return nil }
        // Binary search for the piece that holds `offset`.
        var low = head
        var high = pieces.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if pieces[middle].offset <= offset { low = middle } else { high = middle - 1 }
        }
        let piece = pieces[low]
        let from = Int(offset - piece.offset)
        let upTo = min(piece.bytes.count, from + limit)
        return (piece.source, piece.bytes[from..<upTo])
    }
}
