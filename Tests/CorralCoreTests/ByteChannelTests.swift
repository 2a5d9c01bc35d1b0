import CorralCore
import Foundation
import Testing

@Suite("ByteChannel")
struct ByteChannelTests {
    /// Every byte, in order, whichever side waits first; a small capacity makes both wait. The
    /// time limits catch a lost wake-up (a hang); they are generous because in a full parallel
    /// run other tests' blocking calls can hold the few cooperative threads for a while.
    func pattern(_ index: Int) -> [UInt8] { (0..<1000).map { UInt8(truncatingIfNeeded: index &+ $0) } }

    @Test("a task sends to a task: every chunk arrives, in order, then the end", .timeLimit(.minutes(5)))
    func taskToTask() async throws {
        let channel = ByteChannel(capacity: 4096)
        let sender = Task {
            for index in 0..<500 {
                try await channel.send(pattern(index))
                if index % 7 == 0 { await Task.yield() }
            }
            channel.finish()
        }
        var received: [UInt8] = []
        while let chunk = try await channel.receive() { received += chunk }
        try await sender.value
        #expect(received == (0..<500).flatMap(pattern))
    }

    @Test("a thread sends to a task, and a task to a thread", .timeLimit(.minutes(5)))
    func acrossThreads() async throws {
        let toTask = ByteChannel(capacity: 4096)
        let sending = Task {
            try await runOnThread {
                for index in 0..<300 { try toTask.blockingSend(pattern(index)) }
                toTask.finish()
            }
        }
        var received: [UInt8] = []
        while let chunk = try await toTask.receive() { received += chunk }
        try await sending.value
        #expect(received == (0..<300).flatMap(pattern))

        let toThread = ByteChannel(capacity: 4096)
        let receiving = Task {
            try await runOnThread { () -> [UInt8] in
                var all: [UInt8] = []
                while let chunk = try toThread.blockingReceive() { all += chunk }
                return all
            }
        }
        for index in 0..<300 { try await toThread.send(pattern(index)) }
        toThread.finish()
        #expect(try await receiving.value == (0..<300).flatMap(pattern))
    }

    @Test("an error ends the stream after the chunks sent before it")
    func errorAfterChunks() async throws {
        let channel = ByteChannel()
        try await channel.send([1, 2, 3])
        channel.finish(throwing: CorralError(.io, "disk gone"))
        #expect(try await channel.receive() == [1, 2, 3])
        await #expect(throws: CorralError.self) { try await channel.receive() }
    }
}
