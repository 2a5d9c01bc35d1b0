/// Keeps at most `limit` bytes of one output stream: the first half and the last half, with
/// the count of what was dropped between them. Memory stays bounded however much arrives.
struct OutputCapture: Sendable {
    let limit: Int
    private(set) var head: [UInt8] = []
    private var tail: [UInt8] = []
    /// Index of the oldest byte in `tail`, used as a ring once it is full.
    private var tailStart = 0
    private(set) var total = 0

    init(limit: Int) {
        self.limit = max(limit, 2)
        head.reserveCapacity(min(self.limit / 2, 1 << 16))
    }

    var truncated: Bool { total > limit }

    mutating func append(_ bytes: [UInt8]) {
        total += bytes.count
        var rest = bytes[...]
        let headRoom = limit / 2 - head.count
        if headRoom > 0 {
            head.append(contentsOf: rest.prefix(headRoom))
            rest = rest.dropFirst(headRoom)
        }
        guard !rest.isEmpty else { return }
        let tailLimit = limit - limit / 2
        if rest.count >= tailLimit {
            tail = Array(rest.suffix(tailLimit))
            tailStart = 0
            return
        }
        for byte in rest {
            if tail.count < tailLimit {
                tail.append(byte)
            } else {
                tail[tailStart] = byte
                tailStart = (tailStart + 1) % tailLimit
            }
        }
    }

    /// The kept bytes as text, with a marker where bytes were dropped.
    func text(streamName: String) -> String {
        let ordered = Array(tail[tailStart...] + tail[..<tailStart])
        guard truncated else {
            return String(decoding: head + ordered, as: UTF8.self)
        }
        let dropped = total - head.count - ordered.count
        return String(decoding: head, as: UTF8.self)
            + "\n[corral: \(dropped) bytes of \(streamName) cut here; \(total) bytes in all, the first and last \(limit / 2) kept]\n"
            + String(decoding: ordered, as: UTF8.self)
    }
}
