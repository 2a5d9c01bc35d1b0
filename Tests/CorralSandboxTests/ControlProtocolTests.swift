import ControlProtocol
import Testing

/// The control connection's wire format, as both corral-init and the host read it.
@Suite("The control protocol's frames")
struct ControlProtocolTests {
    @Test("a header round-trips, big-endian, and a short or unknown one is refused")
    func header() {
        let header = ControlFrameHeader(.stdout, id: 0x0102_0304, length: 70_000)
        #expect(header.bytes == [17, 1, 2, 3, 4, 0, 1, 0x11, 0x70])
        #expect(ControlFrameHeader(parsing: header.bytes) == header)
        #expect(ControlFrameHeader(parsing: header.bytes.prefix(8)) == nil)
        let unknown = ControlFrameHeader(parsing: [99, 0, 0, 0, 1, 0, 0, 0, 0])
        #expect(unknown?.kind == nil && unknown?.isValid == false)
        let huge = ControlFrameHeader(.exec, id: 1, length: ControlFrameHeader.maxPayload + 1)
        #expect(ControlFrameHeader(parsing: huge.bytes)?.isValid == false)
    }

    @Test("an exec request round-trips, empty arguments and all; NUL bytes and short payloads are refused")
    func execRequest() throws {
        let request = ExecRequest(
            timeoutMilliseconds: 1500, graceMilliseconds: 2000, workingDirectory: "/work space",
            arguments: ["sh", "-c", "echo \"$A\"", ""], environment: ["A=1=2", "B="])
        let payload = try #require(request.encoded())
        #expect(ExecRequest(decoding: payload) == request)
        let bare = ExecRequest(
            timeoutMilliseconds: 0, graceMilliseconds: 0, workingDirectory: "/", arguments: ["true", ""],
            environment: [])
        #expect(ExecRequest(decoding: try #require(bare.encoded())) == bare)
        var withNUL = request
        withNUL.arguments.append("a\u{0}b")
        #expect(withNUL.encoded() == nil)
        #expect(ExecRequest(decoding: Array("10\u{0}20\u{0}/\u{0}3\u{0}only-one".utf8)) == nil)
        #expect(ExecRequest(decoding: Array("x\u{0}20\u{0}/\u{0}1\u{0}true".utf8)) == nil)
        #expect(ExecRequest(decoding: []) == nil)
    }
}
