import CorralCore
import CorralSession
import Foundation
import TestSupport
import Testing

/// `FileSessionStore.delete`, added for `corral tenant rm --purge` (security review finding 10).
@Suite("Deleting a session")
struct SessionDeleteTests {
    @Test("a deleted session is gone for this store and any other, its files too, and its id is free again")
    func delete() async throws {
        try await withTemporaryDirectory { directory in
            let store = FileSessionStore(directory: directory)
            let info = try await store.create(id: SessionID(unchecked: "doomed"), tenant: TenantID(unchecked: "alice"))
            let lease = try await store.currentLease(info.id)
            _ = try await store.append(info.id, [NewEvent(type: "x")], lease: lease)
            #expect(try await store.readPage(info.id).events.count == 1)

            try await store.delete(info.id)
            await #expect(throws: CorralError.self) { _ = try await store.session(info.id) }
            await #expect(throws: CorralError.self) { _ = try await store.readPage(info.id) }
            #expect(try await store.list().isEmpty)
            #expect(try await FileSessionStore(directory: directory).list().isEmpty)
            let left = try FileManager.default.subpathsOfDirectory(atPath: directory.path)
            #expect(!left.contains { $0.contains("doomed") }, "\(left)")
            let error = await #expect(throws: CorralError.self) { try await store.delete(info.id) }
            #expect(error?.code == .notFound)

            let again = try await store.create(id: info.id, tenant: TenantID(unchecked: "bob"))
            #expect(again.tenant == TenantID(unchecked: "bob") && again.head == 0)
        }
    }
}
