/// The command section of a receive-pack request body: which refs a push updates, with the
/// client's capabilities, and where the pack starts.
///
/// Layout (git's pack-protocol): optional `shallow <oid>` pkt-lines, then one pkt-line per
/// command, `<old> <new> <ref>` (the first with `\0` and capabilities), then a flush-pkt;
/// with `push-options`, option pkt-lines and another flush; then the pack.
struct ReceivePackRequest: Sendable, Equatable {
    struct Command: Sendable, Equatable {
        var old: String
        var new: String
        var ref: String

        var isCreate: Bool { old.allSatisfy { $0 == "0" } }
        var isDelete: Bool { new.allSatisfy { $0 == "0" } }
    }

    var commands: [Command]
    var capabilities: [String]
    /// Offset of the pack in the body.
    var packOffset: Int

    /// The largest pkt-line git allows (length included).
    static let maxPacketLength = 65520
    static let maxCommands = 10_000

    enum ParseError: Error, Equatable {
        /// The section is not complete within the bytes given.
        case needMore
        case malformed(String)
        case unsupported(String)
    }

    /// Parses from the start of the body. `complete` says whether `bytes` is the whole body
    /// (a section cut short is then malformed rather than `needMore`).
    static func parse(_ bytes: [UInt8], complete: Bool) throws(ParseError) -> ReceivePackRequest {
        var offset = 0
        var commands: [Command] = []
        var capabilities: [String] = []

        func nextPacket() throws(ParseError) -> [UInt8]? {
            guard offset + 4 <= bytes.count else {
                throw complete ? .malformed("the request ends inside a pkt-line header") : .needMore
            }
            var length = 0
            for byte in bytes[offset..<offset + 4] {
                guard let digit = hexValue(byte) else {
                    throw .malformed("a pkt-line length is not four hexadecimal digits")
                }
                length = length * 16 + digit
            }
            if length == 0 {
                offset += 4
                return nil  // flush-pkt
            }
            guard length > 4 else { throw .malformed("unexpected special pkt-line \(length) in a push") }
            guard length <= maxPacketLength else {
                throw .malformed("a pkt-line is longer than \(maxPacketLength) bytes")
            }
            guard offset + length <= bytes.count else {
                throw complete ? .malformed("the request ends inside a pkt-line") : .needMore
            }
            var payload = Array(bytes[offset + 4..<offset + length])
            offset += length
            if payload.last == UInt8(ascii: "\n") { payload.removeLast() }
            return payload
        }

        while let payload = try nextPacket() {
            var line = payload
            if commands.isEmpty, let nul = line.firstIndex(of: 0) {
                capabilities = String(decoding: line[(nul + 1)...], as: UTF8.self).split(separator: " ").map(
                    String.init)
                line = Array(line[..<nul])
            }
            let text = String(decoding: line, as: UTF8.self)
            if commands.isEmpty && text.hasPrefix("shallow ") { continue }
            if text.hasPrefix("push-cert") {
                throw .unsupported("signed pushes (push-cert) are not supported through the gateway")
            }
            commands.append(try parseCommand(text))
            guard commands.count <= maxCommands else {
                throw .malformed("more than \(maxCommands) ref updates in one push")
            }
        }
        guard !commands.isEmpty else { throw .malformed("the push names no ref to update") }
        if capabilities.contains("push-options") {
            var options = 0
            while try nextPacket() != nil {
                options += 1
                guard options <= 1000 else { throw .malformed("more than 1000 push options") }
            }
        }
        return ReceivePackRequest(commands: commands, capabilities: capabilities, packOffset: offset)
    }

    private static func parseCommand(_ text: String) throws(ParseError) -> Command {
        let parts = text.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw .malformed("a push command is not '<old> <new> <ref>'") }
        let old = String(parts[0])
        let new = String(parts[1])
        let ref = String(parts[2])
        guard isObjectID(old), isObjectID(new), old.count == new.count else {
            throw .malformed("a push command holds an object id that is not 40 or 64 hexadecimal digits")
        }
        guard ref.hasPrefix("refs/"), ref.utf8.count <= 1024,
            ref.utf8.allSatisfy({ $0 > 0x20 && $0 != 0x7f })
        else {
            throw .malformed("a push command names a ref that is not under refs/ or holds spaces or control characters")
        }
        return Command(old: old, new: new, ref: ref)
    }

    static func isObjectID(_ text: String) -> Bool {
        (text.utf8.count == 40 || text.utf8.count == 64)
            && text.utf8.allSatisfy {
                ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9"))
                    || ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "f"))
            }
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }
}

/// pkt-line framing and the report-status answer a refused push gets.
enum PktLine {
    static func encode(_ payload: [UInt8]) -> [UInt8] {
        let length = String(payload.count + 4, radix: 16)
        return Array((String(repeating: "0", count: 4 - length.count) + length).utf8) + payload
    }

    static func encode(_ text: String) -> [UInt8] { encode(Array(text.utf8)) }

    static let flush = Array("0000".utf8)

    /// A receive-pack answer refusing every command: `unpack ok`, then `ng <ref> <reason>`
    /// per command, wrapped in side-band channel 1 when the client asked for it, with
    /// `messages` on channel 2 so that git prints them as `remote: …`.
    static func refusalReport(
        refusals: [(ref: String, reason: String)], capabilities: [String], messages: [String]
    ) -> [UInt8] {
        var report = encode("unpack ok\n")
        for refusal in refusals {
            let reason = refusal.reason.map { $0.isNewline ? " " : $0 }
            report += encode("ng \(refusal.ref) \(String(reason))\n")
        }
        report += flush
        let bandSize: Int
        if capabilities.contains("side-band-64k") {
            bandSize = 65515
        } else if capabilities.contains("side-band") {
            bandSize = 995
        } else {
            return report
        }
        var out: [UInt8] = []
        for message in messages {
            let bytes = Array((message.hasSuffix("\n") ? message : message + "\n").utf8)
            var start = 0
            while start < bytes.count {
                let end = min(bytes.count, start + bandSize)
                out += encode([2] + bytes[start..<end])
                start = end
            }
        }
        var start = 0
        while start < report.count {
            let end = min(report.count, start + bandSize)
            out += encode([1] + report[start..<end])
            start = end
        }
        return out + flush
    }
}
