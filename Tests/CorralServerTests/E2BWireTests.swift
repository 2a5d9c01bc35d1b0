import CorralCore
import Foundation
import Testing

@testable import CorralHost
@testable import CorralServer

@Suite("E2B's wire: Connect envelopes, multipart bodies, watch differences")
struct E2BWireTests {
    @Test("envelopes split wherever the bytes are cut, and the end of a stream carries its error")
    func envelopes() throws {
        let first = ConnectWire.envelope(.object(["a": .int(1)]))
        let last = ConnectWire.endStream(ConnectError.notFound("gone"))
        let bytes = first + last
        for cut in 0...bytes.count {
            var reader = ConnectWire.EnvelopeReader()
            var frames: [(UInt8, [UInt8])] = []
            reader.append(bytes[..<cut])
            while let frame = try reader.next() { frames.append(frame) }
            reader.append(bytes[cut...])
            while let frame = try reader.next() { frames.append(frame) }
            #expect(frames.count == 2 && !reader.hasPartial, "cut at \(cut)")
            #expect(frames.first?.0 == 0 && frames.last?.0 == ConnectWire.endStreamFlag)
            let end = try ConnectWire.decode(frames.last?.1 ?? [])
            #expect(end["error"]?["code"] == .string("not_found"))
        }
    }

    @Test("a frame that claims more than 4 MiB, a compressed frame and a non-object message are refused")
    func malformed() throws {
        var huge = ConnectWire.EnvelopeReader()
        huge.append([0, 0x7f, 0xff, 0xff, 0xff])
        #expect(throws: ConnectError.self) { try huge.next() }
        var compressed = ConnectWire.EnvelopeReader()
        compressed.append(ConnectWire.envelope(bytes: Array("{}".utf8), flags: 1))
        #expect(throws: ConnectError.self) { try compressed.next() }
        #expect(throws: ConnectError.self) { try ConnectWire.decode(Array("[1]".utf8)) }
        #expect(throws: ConnectError.self) { try ConnectWire.decode(Array("{bad".utf8)) }
    }

    @Test("proto3 JSON: bytes in either base64 alphabet, integers as numbers or strings")
    func protoJSON() {
        #expect(JSONValue.string("aGk").protoBytesValue == Array("hi".utf8))
        #expect(JSONValue.string("-_8=").protoBytesValue == [0xfb, 0xff])
        #expect(JSONValue.string("12").protoIntValue == 12)
        #expect(JSONValue.int(7).protoIntValue == 7)
        #expect(JSONValue.protoInt64(5) == .string("5"))
    }

    @Test("multipart bodies as httpx sends them: each part's file name, content kept byte for byte")
    func multipart() throws {
        let boundary = "b0undary"
        var body = Array(
            "--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/home/user/a.txt\"\r\n".utf8)
        body += Array("Content-Type: application/octet-stream\r\n\r\n".utf8) + [0, 13, 10, 45, 45] + Array("\r\n".utf8)
        body += Array(
            "--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.txt\"\r\n\r\nB\r\n".utf8)
        body += Array("--\(boundary)--\r\n".utf8)
        let parts = try E2BMultipart.parse(body, contentType: "multipart/form-data; boundary=\(boundary)")
        #expect(parts.map(\.filename) == ["/home/user/a.txt", "b.txt"])
        #expect(parts.first?.body == [0, 13, 10, 45, 45])
        #expect(parts.last?.body == Array("B".utf8))
        #expect(throws: E2BAPIError.self) { try E2BMultipart.parse(body, contentType: "multipart/form-data") }
        #expect(throws: E2BAPIError.self) {
            try E2BMultipart.parse(Array("junk".utf8), contentType: "multipart/form-data; boundary=x")
        }
    }

    @Test("a watcher's difference: new files are CREATE and WRITE, changed ones WRITE, gone ones REMOVE")
    func watchDifference() {
        let then = Date(timeIntervalSince1970: 1)
        let before: [String: E2BWatchers.Seen] = [
            "kept": .init(isDirectory: false, size: 1, modified: then),
            "changed": .init(isDirectory: false, size: 1, modified: then),
            "gone": .init(isDirectory: false, size: 1, modified: then),
        ]
        var after = before
        after["changed"]?.size = 2
        after["gone"] = nil
        after["new"] = .init(isDirectory: false, size: 3, modified: then)
        after["dir"] = .init(isDirectory: true, size: 4096, modified: then)
        let events = E2BWatchers.difference(from: before, to: after).compactMap { event -> String? in
            guard let name = event["name"]?.stringValue, let type = event["type"]?.stringValue else { return nil }
            return "\(type.replacingOccurrences(of: "EVENT_TYPE_", with: "")) \(name)"
        }
        #expect(events == ["WRITE changed", "CREATE dir", "CREATE new", "WRITE new", "REMOVE gone"])
    }
}
