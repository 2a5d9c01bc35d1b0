import CorralCore

extension NewEvent {
    /// An event checked and encoded for an append, before any lock is taken: what every store
    /// refuses, it refuses the same way.
    public struct Checked: Sendable, Hashable {
        public var id: EventID
        /// True when the caller gave the id (a retry can then be recognised by it).
        public var callerID: Bool
        public var type: [UInt8]
        /// The data as compact JSON.
        public var data: [UInt8]
    }

    /// Checks every event of an append against the limits, refusing the whole call at the
    /// first problem, and gives each event without an id one from `generator`.
    /// `recordSize(id, type, data)` is what one event costs the store against `maxAppendBytes`.
    public static func check<G: RandomNumberGenerator>(
        _ events: [NewEvent], session: SessionID, maxEventBytes: Int, maxAppendBytes: Int,
        recordSize: (Int, Int, Int) -> Int, ids generator: inout G
    ) throws -> [Checked] {
        guard !events.isEmpty else {
            throw CorralError(
                .invalidArgument, "append to session \(session) has no events", hint: "pass at least one event")
        }
        var total = 0
        var checked: [Checked] = []
        checked.reserveCapacity(events.count)
        for (index, event) in events.enumerated() {
            let which = events.count == 1 ? "the event" : "event \(index + 1) of \(events.count)"
            let type = Array(event.type.utf8)
            guard !type.isEmpty, type.count <= NewEvent.maxTypeLength,
                !type.contains(where: { $0 < 0x20 || $0 == 0x7F })
            else {
                throw CorralError(
                    .invalidArgument, "\(which) has an invalid type '\(event.type.prefix(60))'",
                    hint: "a type is 1-\(NewEvent.maxTypeLength) bytes without control characters, such as user.message"
                )
            }
            if let problem = JSONCodec.unencodable(event.data) {
                throw CorralError(
                    .invalidArgument, "\(which): \(problem)", hint: "JSON has no NaN or infinity; send null or a string"
                )
            }
            let data = JSONCodec.encode(event.data)
            let id = event.id ?? EventID.random(using: &generator)
            let size = id.rawValue.utf8.count + type.count + data.count
            guard size <= maxEventBytes else {
                throw CorralError(
                    .resourceExhausted,
                    "\(which) is \(ByteSize(bytes: Int64(size))) (\(size) bytes), over the event limit of \(ByteSize(bytes: Int64(maxEventBytes)))",
                    hint: "store large payloads elsewhere and append a reference to them; nothing was written")
            }
            total += recordSize(id.rawValue.utf8.count, type.count, data.count)
            guard total <= maxAppendBytes else {
                throw CorralError(
                    .resourceExhausted,
                    "append to session \(session) is over \(ByteSize(bytes: Int64(maxAppendBytes))) in one call",
                    hint: "split it into several appends; nothing was written")
            }
            checked.append(Checked(id: id, callerID: event.id != nil, type: type, data: data))
        }
        return checked
    }
}
