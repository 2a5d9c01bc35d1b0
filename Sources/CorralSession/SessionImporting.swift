import CorralCore

/// A store that can take sessions exactly as another store holds them, for
/// `corral store copy`: the session with its creation time, tenant, metadata, fork origin and
/// epoch, then its events with their own seqs, ids, times (to the microsecond, as stored) and
/// epochs. Both stores implement it.
public protocol SessionImporting: SessionStore {
    /// Makes `info.id` empty, with `info`'s creation time, tenant, metadata, fork origin and
    /// epoch. Refused (`.alreadyExists`) when the id is taken.
    func importSession(_ info: SessionInfo) async throws

    /// Appends `events` as they are, durably. The first must follow the session's head; an
    /// event already there with the same id (a copy that is run again) is skipped.
    func importEvents(_ session: SessionID, _ events: [Event]) async throws
}

extension SessionImporting {
    /// The events as an append would check and encode them, with their time and epoch.
    public static func checked(_ events: [Event], session: SessionID, maxEventBytes: Int) throws -> (
        [NewEvent.Checked], [(time: Int64, epoch: UInt64)]
    ) {
        var generator = SystemRandomNumberGenerator()
        let checked = try NewEvent.check(
            events.map { NewEvent(id: $0.id, type: $0.type, data: $0.data) }, session: session,
            maxEventBytes: maxEventBytes, maxAppendBytes: .max, recordSize: { $0 + $1 + $2 }, ids: &generator)
        return (checked, events.map { (Timestamp.nanoseconds($0.time), $0.epoch) })
    }
}
