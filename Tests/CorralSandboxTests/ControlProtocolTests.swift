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

    @Test(
        "an exec request round-trips, empty arguments and all; NUL bytes, no arguments and short payloads are refused")
    func execRequest() throws {
        let request = ExecRequest(
            commandID: "cm-abc", arguments: ["sh", "-c", "echo \"$A\"", ""], environment: ["A=1=2", "B="],
            workingDirectory: "/work space", timeoutMilliseconds: 1500, graceMilliseconds: 2000, stdin: true,
            detached: true, terminal: WindowSize(rows: 24, columns: 80), outputWindow: 1 << 16)
        let payload = try #require(request.encoded())
        #expect(ExecRequest(decoding: payload) == request)
        let bare = ExecRequest(commandID: "cm-x", arguments: ["true", ""], workingDirectory: "/")
        #expect(ExecRequest(decoding: try #require(bare.encoded())) == bare)
        var withNUL = request
        withNUL.arguments.append("a\u{0}b")
        #expect(withNUL.encoded() == nil)
        var none = bare
        none.arguments = []
        #expect(ExecRequest(decoding: try #require(none.encoded())) == nil)
        #expect(ExecRequest(decoding: payload.dropLast()) == nil)
        #expect(ExecRequest(decoding: payload + [0]) == nil)
        #expect(ExecRequest(decoding: []) == nil)
    }

    @Test("terminal sizes outside 1...1000 rows and 1...2000 columns are refused on the wire too")
    func windowSize() throws {
        #expect(WindowSize(rows: 0, columns: 80) == nil)
        #expect(WindowSize(rows: 24, columns: 2001) == nil)
        #expect(WindowSize(rows: 100_000, columns: 100_000) == nil)
        let size = try #require(WindowSize(rows: 1000, columns: 2000))
        #expect(WindowSize(decoding: size.encoded()) == size)
        var writer = ControlFieldWriter()
        writer.append(UInt64(5000))
        writer.append(UInt64(80))
        #expect(WindowSize(decoding: writer.bytes) == nil)
    }

    @Test("reports, requests and listings round-trip; a failure decodes from anything")
    func messages() throws {
        let exit = ExitReport(status: 137, timedOut: false, outOfMemory: true, endedMilliseconds: 99, outputEnd: 12)
        #expect(ExitReport(decoding: exit.encoded()) == exit)
        let record = CommandRecord(
            commandID: "cm-1", pid: 42, arguments: ["sleep", "9"], startedMilliseconds: 7, exit: exit, detached: true,
            terminal: false, stdinOpen: false, outputEnd: 12, retainedStart: 0)
        #expect(CommandRecord(decoding: record.encoded()) == record)
        let attached = AttachedReport(command: record, startOffset: 5, dropped: 5)
        #expect(AttachedReport(decoding: attached.encoded()) == attached)
        let attach = AttachRequest(commandID: "cm-1", offset: 3, stdin: true, outputWindow: 4096)
        #expect(AttachRequest(decoding: attach.encoded()) == attach)
        let signal = SignalRequest(commandID: "cm-1", signal: 15)
        #expect(SignalRequest(decoding: signal.encoded()) == signal)
        let file = FileRequest(.write, path: "/tmp/a", mode: 0o755, exclusive: true)
        #expect(FileRequest(decoding: try #require(file.encoded())) == file)
        #expect(FileRequest(.read, path: "/tmp/\u{0}").encoded() == nil)
        let status = FileStatus(
            name: "a", kind: .symlink, size: 3, mode: 0o777, modifiedNanoseconds: 5, linkTarget: "b", uid: 1, gid: 2)
        #expect(FileStatus(decoding: status.encoded()) == status)
        #expect(
            FileStatus.decodeListing(FileStatus.encodeListing([status.encoded(), status.encoded()])) == [
                status, status,
            ])
        let failure = ControlFailure(ControlFailure.Code.system, errno: 2, "cannot read /x")
        #expect(ControlFailure(decoding: failure.encoded()) == failure)
        #expect(ControlFailure(decoding: Array("old text".utf8)).message == "old text")
        #expect(ControlCredit.decode(ControlCredit.encode(70_000)) == 70_000)
        #expect(ControlCredit.decode([1, 2, 3]) == nil)
    }
}

/// The hello and the key of control protocols 2 and 3.
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
        let older = try #require(ControlHello(decoding: Array("2\u{0}x\u{0}".utf8) + key.hex))
        #expect(older.protocolVersion == 2 && older.key?.matches(key) == true)
        let future = try #require(ControlHello(decoding: Array("4\u{0}x\u{0}".utf8) + key.hex))
        #expect(future.protocolVersion == 4 && future.key == nil)
        #expect(ControlHello(decoding: Array("two\u{0}x\u{0}".utf8)) == nil)
        #expect(ControlHello(decoding: [UInt8](repeating: 0x41, count: ControlHello.maxPayload + 1)) == nil)
        let noisy = try #require(ControlHello(decoding: Array("2\u{0}\u{1b}[31mred\nline\u{0}".utf8)))
        #expect(noisy.initVersion == "[31mredline" && noisy.key == nil)
    }
}
