import CorralCore
import Foundation
import TestSupport
import Testing

@testable import CorralSession

@Suite("Checksums, JSON and timestamps")
struct CodecTests {
    @Test("CRC-32C gives the published check values, on the CPU's instructions and without them")
    func crcCheckValues() {
        let check = Array("123456789".utf8)
        #expect(crc32c(check) == 0xE306_9283)
        #expect(crc32cPortable(check) == 0xE306_9283)
        #expect(crc32c([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        var generator = SeededGenerator(seed: 7)
        for length in [0, 1, 7, 8, 9, 63, 64, 65, 1000, 4099] {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(crc32c(bytes) == crc32cPortable(bytes), "length \(length)")
            let split = length / 3
            #expect(crc32c(Array(bytes[split...]), continuing: crc32c(Array(bytes[..<split]))) == crc32c(bytes))
        }
        // On a CPU with SSE4.2 the checksum runs on its crc32 instruction.
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        if flags.contains(" sse4_2") { #expect(crc32cUsesHardware) }
    }

    @Test("JSON written by the store reads back as the same value")
    func jsonRoundTrip() throws {
        var generator = SeededGenerator(seed: 42)
        for _ in 0..<2000 {
            let value = randomJSON(using: &generator)
            let text = JSONCodec.encode(value)
            #expect(try JSONCodec.decode(text) == value)
            // Foundation agrees that it is JSON, and on what it says.
            let foundation = try JSONDecoder().decode(JSONValue.self, from: Data(text))
            #expect(JSONCodec.encode(foundation) == text || foundation.containsDoubles)
        }
    }

    @Test("JSON the standard allows is read, including escapes and surrogate pairs")
    func jsonAccepts() throws {
        #expect(
            try JSONCodec.decode(#" {"a" : [1, -2.5e3, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9\ud83e\udd80"]} "#)
                == ["a": [1, .double(-2500), true, false, nil, "x\"\\/\u{8}\u{c}\n\r\té🦀"]])
        #expect(try JSONCodec.decode("9223372036854775807") == .int(Int64.max))
        #expect(try JSONCodec.decode("9223372036854775808") == .double(9223372036854775808))
        #expect(try JSONCodec.decode("0") == 0)
    }

    @Test(
        "malformed JSON is refused with the byte where it goes wrong",
        arguments: [
            ("", "unexpected end of input"), ("{", "unexpected end of input"), ("{\"a\":1,}", "expected a string"),
            ("[1 2]", "expected ','"), ("01", "leading zeros"), ("1.", "digit after '.'"),
            ("\"\u{01}\"", "control character"),
            ("\"\\ud800\"", "lone UTF-16 surrogate"), ("\"\\q\"", "invalid escape"), ("nulx", "expected 'null'"),
            ("1e999", "out of range"), ("{} {}", "after the value"), ("'a'", "unexpected character"),
        ])
    func jsonRefuses(input: String, reason: String) {
        #expect {
            _ = try JSONCodec.decode(input)
        } throws: { error in
            guard let error = error as? JSONCodec.ReadError else { return false }
            return error.description.contains(reason) && error.description.hasPrefix("malformed JSON at byte")
        }
    }

    @Test("invalid UTF-8 inside a string is refused")
    func jsonRefusesBadUTF8() {
        #expect(throws: JSONCodec.ReadError.self) { _ = try JSONCodec.decode([0x22, 0xC3, 0x28, 0x22]) }
    }

    @Test("nesting deeper than the limit is refused, not a crash")
    func jsonDepthLimit() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONCodec.ReadError.self) { _ = try JSONCodec.decode(deep) }
    }

    @Test("an event line needs a type and refuses unknown fields")
    func eventLines() throws {
        let parsed = try NewEvent(json: #"{"type":"tool.intent","id":"toolu_01A","data":{"cmd":"ls"}}"#)
        #expect(parsed == NewEvent(id: EventID(unchecked: "toolu_01A"), type: "tool.intent", data: ["cmd": "ls"]))
        #expect(try NewEvent(json: #"{"type":"x"}"#).data == .null)
        for (line, message) in [
            (#"{"data":1}"#, "no 'type'"), (#"{"type":"x","dtaa":1}"#, "unknown event field 'dtaa'"),
            ("[1]", "must be a JSON object"),
            (#"{"type":"x","id":"has space"}"#, "invalid event id"), (#"{"type":"x","id":7}"#, "'id' must be a string"),
            (#"{"type":"x""#, "malformed JSON"),
        ] {
            #expect {
                _ = try NewEvent(json: line)
            } throws: { error in
                (error as? CorralError)?.code == .invalidArgument
                    && (error as? CorralError)?.message.contains(message) == true
            }
        }
    }

    @Test("timestamps print as RFC 3339 in UTC and read back")
    func timestamps() {
        #expect(Timestamp.format(nanoseconds: 0) == "1970-01-01T00:00:00.000000Z")
        #expect(Timestamp.format(nanoseconds: 951_782_400_123_456_789) == "2000-02-29T00:00:00.123456Z")
        #expect(Timestamp.format(nanoseconds: -1_000) == "1969-12-31T23:59:59.999999Z")
        #expect(Timestamp.parse("2000-02-29T00:00:00.123456Z") == 951_782_400_123_456_000)
        #expect(Timestamp.parse("2000-02-29T00:00:00Z") == 951_782_400_000_000_000)
        #expect(Timestamp.parse("2000-02-29 00:00:00Z") == nil)
        var generator = SeededGenerator(seed: 3)
        for _ in 0..<1000 {
            let micros = Int64.random(in: -2_000_000_000_000_000...8_000_000_000_000_000, using: &generator)
            #expect(Timestamp.parse(Timestamp.format(nanoseconds: micros * 1000)) == micros * 1000)
        }
    }

    @Test("a record's frame holds its fields and detects a flipped bit anywhere in it")
    func recordFrame() {
        var buffer: [UInt8] = []
        LogFormat.appendRecord(
            to: &buffer, seq: 42, epoch: 3, time: 1234, id: Array("ev-1".utf8), type: Array("user.message".utf8),
            data: Array("{}".utf8))
        #expect(buffer.count % 8 == 0)
        buffer.withUnsafeBytes { raw in
            guard case .valid(let header) = LogFormat.checkRecord(raw) else {
                Issue.record("the record does not check")
                return
            }
            #expect(header.seq == 42 && header.epoch == 3 && header.time == 1234 && header.size == buffer.count)
        }
        let checked = 8 + 32 + 4 + 12 + 2  // prefix, fields, id, type, data: padding is not covered
        for byte in 0..<checked {
            var damaged = buffer
            damaged[byte] ^= 0x10
            let result = damaged.withUnsafeBytes { LogFormat.checkRecord($0) }
            if case .valid = result { Issue.record("a flip at byte \(byte) went unnoticed") }
        }
    }
}

extension JSONValue {
    var containsDoubles: Bool {
        switch self {
        case .double: true
        case .array(let items): items.contains { $0.containsDoubles }
        case .object(let members): members.values.contains { $0.containsDoubles }
        default: false
        }
    }
}
