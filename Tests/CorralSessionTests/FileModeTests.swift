import CorralCore
import Foundation
import TestSupport
import Testing

@testable import CorralSession

// Security review finding 9: session segments were 0644 in 0755 directories, so any host user
// could read every session.
@Suite("Session files are the service's alone")
struct FileModeTests {
    @Test("every directory is 0700 and every file 0600, after appends, a fork and a wake")
    func modes() async throws {
        try await withTemporaryDirectory { directory in
            let store = makeStore(directory, segmentBytes: 4096)
            let info = try await store.create(metadata: ["owner": "ci"])
            var lease = try await store.currentLease(info.id)
            for round in 0..<20 {
                _ = try await store.append(
                    info.id, [event("user.message", ["text": .string(String(repeating: "x", count: 400 + round))])],
                    lease: lease)
            }
            lease = try await store.wake(info.id)
            _ = try await store.append(info.id, [event()], lease: lease)
            _ = try await store.fork(info.id, atSeq: 5)
            var checked = 0
            let root = directory.appendingPathComponent("sessions")
            let walker = FileManager.default.enumerator(atPath: root.path)
            var paths = [root.path]
            while let relative = walker?.nextObject() as? String { paths.append(root.path + "/" + relative) }
            for path in paths {
                var info = stat()
                try #require(lstat(path, &info) == 0)
                let mode = info.st_mode & 0o7777
                if info.st_mode & S_IFMT == S_IFDIR {
                    #expect(mode == 0o700, "\(path) is \(String(mode, radix: 8))")
                } else {
                    #expect(mode == 0o600, "\(path) is \(String(mode, radix: 8))")
                }
                checked += 1
            }
            #expect(checked > 8, "walked \(checked) entries")
        }
    }

    @Test("a sessions directory an older corral left 0755 is tightened to 0700")
    func tightensOldDirectory() async throws {
        try await withTemporaryDirectory { directory in
            let root = directory.appendingPathComponent("sessions")
            try FileManager.default.createDirectory(
                at: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            let store = makeStore(directory)
            _ = try await store.create()
            var info = stat()
            try #require(stat(root.path, &info) == 0)
            #expect(info.st_mode & 0o777 == 0o700)
        }
    }
}
