import CorralAPI
import Testing

@Suite("Reading server-sent events as they arrive")
struct ServerSentEventParserTests {
    static let stream =
        ": corral session se-1\n\n"
        + "id: 1\nevent: user.message\ndata: {\"seq\":1}\n\n"
        + ": keep-alive\n\n"
        + "id: 2\r\nevent: tool.result\r\ndata: first\r\ndata:second\r\n\r\n"
        + "id: 3\revent: x\rdata: {\"a\": \"b: c\"}\r\r"
        + "data: no id\n\n"
        + "id: 4\nevent: unfinished\ndata: {}\n"

    static let expected = [
        ServerSentEvent(id: "1", event: "user.message", data: #"{"seq":1}"#),
        ServerSentEvent(id: "2", event: "tool.result", data: "first\nsecond"),
        ServerSentEvent(id: "3", event: "x", data: #"{"a": "b: c"}"#),
        // The last id stays until another is sent, as the format says.
        ServerSentEvent(id: "3", event: nil, data: "no id"),
    ]

    @Test("comments are skipped; LF, CRLF and CR end lines; an event waits for its blank line")
    func whole() throws {
        var parser = ServerSentEventParser()
        #expect(try parser.feed(Array(Self.stream.utf8)) == Self.expected)
        #expect(try parser.feed(Array("\n".utf8)) == [ServerSentEvent(id: "4", event: "unfinished", data: "{}")])
    }

    @Test("chunks cut anywhere, even between CR and LF, give the same events", arguments: [1, 2, 3, 7, 64])
    func chunked(size: Int) throws {
        var parser = ServerSentEventParser()
        let bytes = Array(Self.stream.utf8)
        var events: [ServerSentEvent] = []
        for start in stride(from: 0, to: bytes.count, by: size) {
            events += try parser.feed(Array(bytes[start..<min(start + size, bytes.count)]))
        }
        #expect(events == Self.expected)
    }

    @Test("a line longer than the limit is an error, not unbounded memory")
    func longLine() {
        var parser = ServerSentEventParser(maxLineBytes: 16)
        #expect(throws: (any Error).self) {
            try parser.feed(Array(("data: " + String(repeating: "x", count: 32)).utf8))
        }
    }
}
