import CorralCore
import Foundation

extension FileSessionStore: SessionImporting {
    public func importSession(_ info: SessionInfo) async throws {
        try Self.check(info.metadata)
        let id = try SessionID(validating: info.id.rawValue)
        let manifest = SessionManifest(
            format: SessionManifest.currentFormat, id: id, tenant: try TenantID(validating: info.tenant.rawValue),
            created: Timestamp.format(nanoseconds: Timestamp.nanoseconds(info.created)), metadata: info.metadata,
            forkedFrom: info.forkedFrom, segmentBytes: configuration.segmentBytes)
        try await blocking {
            try self.install(manifest, epoch: max(1, info.epoch)) { staging in
                // A log of its own from seq 1, even for a fork: nothing is shared with a parent.
                try FileSessionStore.writeDurably(LogFormat.segmentHeader(firstSeq: 1), to: staging.segment(1))
                try Self.writeIndex([], to: staging.index(1))
            }
        }
    }

    public func importEvents(_ session: SessionID, _ events: [Event]) async throws {
        guard let first = events.first else { return }
        let handle = try await self.handle(session)
        let (checked, stamps) = try Self.checked(events, session: session, maxEventBytes: configuration.maxEventBytes)
        let lease = Lease(session: session, epoch: try handle.lock.epoch())
        let outcome: SessionHandle.WriteOutcome
        do {
            outcome = try handle.writer.withLock { writer in
                try handle.withFileLock {
                    try handle.writeLocked(
                        checked, expectedSeq: first.seq, lease: lease, durability: .fsync, writer: &writer,
                        stamps: stamps)
                }
            }
        } catch let error as CorralError {
            if handle.writer.withLock({ $0.failure != nil }) { evict(session, handle) }
            throw error
        }
        do {
            try await handle.awaitDurable(outcome.head)
        } catch {
            evict(session, handle)
            throw error
        }
    }
}
