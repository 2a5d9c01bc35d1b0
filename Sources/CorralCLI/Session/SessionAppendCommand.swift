import ArgumentParser
import CorralCore
import CorralSession
import Foundation

struct SessionAppendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "append",
        abstract: "Append events read from stdin, one JSON object per line; print each seq once it is durable.",
        discussion: """
            Each line is {"type": "...", "id": "...", "data": ...}; only type is required. Lines that arrive \
            together are appended together. A line that is not a valid event stops the command: the lines \
            before it are kept (their seqs are printed), it and the rest are not.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Session id.")
    var id: String

    @Option(
        name: .customLong("expect-seq"),
        help:
            "The seq the first event must get (the head + 1); refused otherwise, unless the events are a retry of ones stored there with the same ids."
    )
    var expectSeq: UInt64?

    @Option(name: .long, help: "fsync (default): print after fdatasync; none: print once written.")
    var durability: String = "fsync"

    @Flag(name: .long, help: "Print {\"seq\":N,\"id\":\"...\"} per event instead of the bare seq.")
    var json = false

    func run() async throws {
        let session = try SessionID(validating: id)
        let mode: Durability
        switch durability {
        case "fsync": mode = .fsync
        case "none": mode = .none
        default: throw CorralError.invalidArgument("unknown durability '\(durability)'", hint: "use fsync or none")
        }
        let backend = try await CommandContext(global).sessionBackend()
        defer { backend.shutdown() }
        let lease = try await backend.currentLease(session)
        var expected = expectSeq
        var output = StandardOutput()
        var lineNumber = 0
        var pending: [UInt8] = []
        let maxEventBytes = backend.maxEventBytes
        let maxLine = 4 * maxEventBytes + 4096
        let json = self.json

        func appendBatch(_ events: [NewEvent]) async throws {
            guard !events.isEmpty else { return }
            try await backend.append(session, events, expectedSeq: expected, lease: lease, durability: mode) { result in
                if expected != nil { expected = result.lastSeq + 1 }
                for appended in result.events {
                    output.line(json ? #"{"seq":\#(appended.seq),"id":"\#(appended.id)"}"# : String(appended.seq))
                }
                output.flush()
            }
        }

        /// Parses whole lines; stops at the first bad one after appending those before it.
        func consume(_ lines: [ArraySlice<UInt8>]) async throws {
            var batch: [NewEvent] = []
            for line in lines {
                lineNumber += 1
                guard line.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) else { continue }
                do {
                    batch.append(try line.withUnsafeBufferPointer { try NewEvent(json: $0) })
                } catch let error as CorralError {
                    try await appendBatch(batch)
                    throw CorralError(error.code, "line \(lineNumber): \(error.message)", hint: error.hint)
                }
            }
            try await appendBatch(batch)
        }

        let input = StandardInputReader()
        for try await chunk in input.chunks {
            defer { input.consumed() }
            // Look for a line end in the new bytes only: a long line arrives in many chunks.
            let newlineInChunk = chunk.lastIndex(of: 0x0A)
            pending.append(contentsOf: chunk)
            guard let newline = newlineInChunk else {
                if pending.count > maxLine {
                    throw CorralError(
                        .resourceExhausted, "line \(lineNumber + 1) is longer than \(maxLine) bytes",
                        hint: "an event may take at most \(ByteSize(bytes: Int64(maxEventBytes))) once encoded")
                }
                continue
            }
            let lastNewline = pending.count - chunk.count + newline
            let complete = pending[..<lastNewline].split(separator: 0x0A, omittingEmptySubsequences: false)
            pending.removeSubrange(...lastNewline)
            try await consume(complete)
        }
        if !pending.isEmpty { try await consume([pending[...]]) }
    }
}

/// Standard input as chunks, read on a thread of its own: a read that waits for a person at
/// a terminal must not hold one of Swift's few cooperative threads. The thread reads a chunk
/// only when the consumer has taken back a credit, so input is never read far ahead.
final class StandardInputReader: Sendable {
    // Made with 0 and raised: libdispatch refuses to free a semaphore whose count is below
    // the one it was made with, which the reading thread may leave it at.
    private let credits = DispatchSemaphore(value: 0)
    let chunks: AsyncThrowingStream<[UInt8], any Error>

    init() {
        let (stream, continuation) = AsyncThrowingStream<[UInt8], any Error>.makeStream()
        chunks = stream
        let credits = self.credits
        credits.signal()
        credits.signal()
        let thread = Thread {
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                credits.wait()
                let count = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                if count > 0 {
                    continuation.yield(Array(buffer[..<count]))
                } else if count == 0 {
                    continuation.finish()
                    return
                } else if errno == EINTR {
                    credits.signal()
                } else {
                    continuation.finish(
                        throwing: CorralError(.io, "cannot read stdin: \(String(cString: strerror(errno)))"))
                    return
                }
            }
        }
        thread.start()
    }

    /// The consumer is done with a chunk; the thread may read another.
    func consumed() { credits.signal() }
}
