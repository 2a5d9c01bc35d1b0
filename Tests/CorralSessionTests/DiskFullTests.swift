import CorralCore
import Foundation
import TestSupport
import Testing

@testable import CorralSession

@Suite("A full disk")
struct DiskFullTests {
    @Test(
        "ENOSPC mid-batch: a clear error, nothing of the batch kept, the session readable, appends work again once there is room"
    )
    func diskFullMidBatch() async throws {
        try await withTemporaryDirectory { directory in
            let mountPoint = directory.appendingPathComponent("small")
            try FileManager.default.createDirectory(at: mountPoint, withIntermediateDirectories: true)
            guard mount("tmpfs", mountPoint.path, "tmpfs", 0, "size=1m") == 0 else {
                Issue.record(
                    "cannot mount a 1 MiB tmpfs at \(mountPoint.path): \(String(cString: strerror(errno))); this test needs root, as CI has"
                )
                return
            }
            defer { umount2(mountPoint.path, Int32(MNT_DETACH)) }

            let store = FileSessionStore(directory: mountPoint.appendingPathComponent("sessions"))
            let id = try await store.create().id
            let lease = try await store.currentLease(id)
            let filler = mountPoint.appendingPathComponent("filler")
            try Data(repeating: 7, count: 256 * 1024).write(to: filler)

            var stored: [String] = []
            var failure: CorralError?
            for batch in 0..<40 {
                let events = (0..<4).map {
                    event("big", id: "b\(batch)-\($0)", ["text": .string(String(repeating: "z", count: 48 * 1024))])
                }
                do {
                    _ = try await store.append(id, events, lease: lease)
                    stored += events.compactMap { $0.id?.rawValue }
                } catch let error as CorralError {
                    failure = error
                    break
                }
            }
            let error = try #require(failure, "the 1 MiB file system never filled up")
            #expect(error.code == .io)
            #expect(
                error.message.contains("no space left on device") && error.message.contains(LogFormat.segmentName(1)))
            #expect(error.hint?.contains("free space") == true)
            #expect(stored.count >= 4, "some batches should fit before the disk fills")

            // The session is whole and readable, in this store and in a fresh one.
            #expect(try await store.all(id).map(\.id.rawValue) == stored)
            let reopened = FileSessionStore(directory: store.directory)
            #expect(try await reopened.all(id).map(\.id.rawValue) == stored)
            #expect(try await reopened.session(id).head == UInt64(stored.count))
            #expect(try sessionFiles(reopened, id).filter { $0.hasSuffix(".broken") }.isEmpty)

            try FileManager.default.removeItem(at: filler)
            let after = try await reopened.append(id, [event(id: "after")], lease: lease)
            #expect(after.firstSeq == UInt64(stored.count) + 1)
        }
    }
}
