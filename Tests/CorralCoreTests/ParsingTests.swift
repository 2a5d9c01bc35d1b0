import CorralCore
import Testing

@Suite("Parsing sizes, durations and ids")
struct ParsingTests {
    @Test(
        "sizes parse the way docker's --memory does",
        arguments: [
            ("1g", Int64(1 << 30)), ("512m", Int64(512 << 20)), ("64k", Int64(64 << 10)), ("100", Int64(100)),
            ("1.5g", Int64(3 << 29)), ("2GiB", Int64(2 << 30)), (" 8MB ", Int64(8 << 20)),
        ])
    func sizes(text: String, bytes: Int64) throws {
        #expect(try ByteSize(parsing: text).bytes == bytes)
    }

    @Test("malformed sizes are refused with the input named", arguments: ["", "g", "-1g", "1x", "abc", "1e400"])
    func badSizes(text: String) {
        #expect(throws: CorralError.self) { try ByteSize(parsing: text) }
        do {
            _ = try ByteSize(parsing: text)
        } catch let error as CorralError {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("'\(text)'"))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test("sizes print back in their shortest exact form")
    func sizeDescription() throws {
        #expect(ByteSize.gibibytes(1).description == "1g")
        #expect(ByteSize(bytes: 1536 * 1024).description == "1536k")
        #expect(ByteSize(bytes: 100).description == "100b")
    }

    @Test(
        "durations parse compound units and bare seconds",
        arguments: [
            ("30s", 30_000.0), ("15m", 900_000.0), ("1h30m", 5_400_000.0), ("250ms", 250.0), ("2", 2000.0),
            ("1d", 86_400_000.0),
        ])
    func durations(text: String, milliseconds: Double) throws {
        #expect(try Duration(parsing: text).milliseconds == milliseconds)
    }

    @Test("malformed durations are refused", arguments: ["", "s", "10x", "-5s", "1h-3m", "m5"])
    func badDurations(text: String) {
        #expect(throws: CorralError.self) { try Duration(parsing: text) }
    }

    @Test("durations round-trip through their compact form")
    func durationRoundTrip() throws {
        for text in ["1h30m", "45s", "250ms", "1d2h"] {
            #expect(try Duration(parsing: text).compactDescription == text)
        }
    }

    @Test(
        "ids refuse path characters, upper case and overlong input",
        arguments: [
            "", "../etc", "a/b", "A", ".hidden", "-lead", String(repeating: "x", count: 65), "sb 1", "é",
        ])
    func badIDs(text: String) {
        #expect(throws: CorralError.self) { try SandboxID(validating: text) }
        #expect(SessionID(text) == nil)
    }

    @Test("random ids carry their prefix and validate")
    func randomIDs() throws {
        let id = SandboxID.random()
        #expect(id.rawValue.hasPrefix("sb-"))
        #expect(try SandboxID(validating: id.rawValue) == id)
        #expect(SandboxID.random() != id)
    }
}
