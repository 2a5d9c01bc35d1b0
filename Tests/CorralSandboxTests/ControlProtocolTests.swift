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

/// The hello and the key of control protocol 2.
@Suite("The control protocol's hello and key")
struct ControlHelloTests {
    @Test("a key round-trips through hex, is compared by value, and never prints")
    func key() throws {
        let key = ControlKey.random()
        let copy = try #require(ControlKey(hex: key.hex + Array("\n".utf8)))
        #expect(copy.matches(key))
        #expect(!ControlKey.random().matches(key))
        #expect(ControlKey(hex: key.hex.dropLast()) == nil)
        #expect(ControlKey(hex: Array(repeating: UInt8(ascii: "g"), count: 64)) == nil)
        let text = String(decoding: key.hex, as: UTF8.self)
        #expect(!"\(key)".contains(text))
        var dumped = ""
        dump(key, to: &dumped)
        #expect(!dumped.contains(text) && !dumped.contains("\(key.bytes[0]),"))
    }

    @Test("a hello round-trips with its key; protocol 1's version-only hello and a future one decode without a key")
    func hello() throws {
        let key = ControlKey.random()
        let hello = ControlHello(initVersion: "0.2.0", key: key)
        let decoded = try #require(ControlHello(decoding: hello.encoded()))
        #expect(decoded.protocolVersion == ControlHello.protocolVersion)
        #expect(decoded.initVersion == "0.2.0")
        #expect(decoded.key?.matches(key) == true)
        #expect(!"\(decoded)".contains(String(decoding: key.hex, as: UTF8.self)))

        let legacy = try #require(ControlHello(decoding: Array("0.1.0".utf8)))
        #expect(legacy.protocolVersion == 1 && legacy.initVersion == "0.1.0" && legacy.key == nil)
        let future = try #require(ControlHello(decoding: Array("3\u{0}x\u{0}".utf8) + key.hex))
        #expect(future.protocolVersion == 3 && future.key == nil)
        #expect(ControlHello(decoding: Array("two\u{0}x\u{0}".utf8)) == nil)
        #expect(ControlHello(decoding: [UInt8](repeating: 0x41, count: ControlHello.maxPayload + 1)) == nil)
        let noisy = try #require(ControlHello(decoding: Array("2\u{0}\u{1b}[31mred\nline\u{0}".utf8)))
        #expect(noisy.initVersion == "[31mredline" && noisy.key == nil)
    }
}
