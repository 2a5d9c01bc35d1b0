import NIOCore
import Synchronization

/// The size of each streamed chunk (HTTP/2) or message (gRPC): 64 KiB.
let chunkSize = 64 << 10

/// One way of carrying the worker link's calls, seen from the caller's end: the control plane's.
///
/// Every implementation runs both ends in this process, on 127.0.0.1: the caller and a worker
/// that answers three calls. `echo` sends its body back; `download` answers with the bytes it
/// was asked for, in 64 KiB pieces; `stall` does the same and counts what it wrote.
protocol LinkClient: Sendable {
    /// The protocol's name in the table.
    var name: String { get }

    /// One small call: sends `body` to the worker's echo and returns the answer.
    func echo(_ body: ByteBuffer) async throws -> ByteBuffer

    /// Asks the worker for `bytes` (a multiple of 64 KiB), reads them all and returns how many came.
    func download(bytes: Int) async throws -> Int

    /// Opens a call for `bytes` whose answer is never read; returns once the answer has begun.
    func stall(bytes: Int) async throws -> StalledCall

    /// What the worker's handlers have handed to their end of the link on stalled calls so far.
    var stalledBytesWritten: Int { get }

    /// What the control plane's socket has received on this link so far, every call together.
    var receivedBytes: Int { get }

    /// Closes the link and stops both ends.
    func shutdown() async
}

/// A call whose caller stopped reading; `end()` cancels it.
struct StalledCall: Sendable {
    let release: Signal
    let task: Task<Void, Never>

    /// Ends the call (the stream is reset) and waits until the caller's side is done.
    func end() async {
        release.fire()
        await task.value
    }
}

/// A one-shot event: `wait()` returns once `fire()` was called. One waiter at a time.
struct Signal: Sendable {
    private let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init() {
        (stream, continuation) = AsyncStream<Void>.makeStream()
    }

    func fire() { continuation.finish() }

    func wait() async {
        for await _ in stream {}
    }
}

/// Bytes a worker wrote, read by the measuring side while the worker writes.
final class ByteCounter: Sendable {
    private let total = Atomic<Int>(0)

    func add(_ bytes: Int) { total.add(bytes, ordering: .relaxed) }

    var value: Int { total.load(ordering: .relaxed) }
}

/// Counts what a connection's socket delivers, at the front of the control plane's pipeline.
final class ReceivedBytes: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let counter: ByteCounter

    init(_ counter: ByteCounter) {
        self.counter = counter
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        counter.add(unwrapInboundIn(data).readableBytes)
        context.fireChannelRead(data)
    }
}

/// What the worker sends: one 64 KiB buffer, written again and again.
enum Payload {
    static let chunk = ByteBuffer(repeating: 0x2A, count: chunkSize)
}

/// A failure of the bench itself (an answer that is not what was asked for).
struct BenchError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}
