/// The per-sandbox secret with which corral-init proves that a control connection is its own
/// (see `ControlProtocol.swift`): 32 random bytes, written as 64 lowercase hex digits in
/// `control.key` and in the hello. Compared in constant time; never printed.
public struct ControlKey: Sendable, CustomStringConvertible, CustomReflectable {
    public static let byteCount = 32
    /// The copy the host puts beside the control socket, for corral-init to read at boot.
    public static let fileName = "control.key"
    /// The most a key file may hold: the digits, and a line end or a little space.
    public static let maxFileSize = 128

    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.byteCount else { return nil }
        self.bytes = bytes
    }

    /// A new key from `generator`; the system's is the kernel's CSPRNG (getrandom).
    public static func random<Generator: RandomNumberGenerator>(using generator: inout Generator) -> ControlKey {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(byteCount)
        while bytes.count < byteCount {
            let word: UInt64 = generator.next()
            for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: word >> shift)) }
        }
        return ControlKey(unchecked: Array(bytes.prefix(byteCount)))
    }

    public static func random() -> ControlKey {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }

    /// Reads 64 hex digits (either case), ignoring trailing white space; nil for anything else.
    public init?<Text: Collection<UInt8>>(hex text: Text) {
        var digits = Array(text.prefix(Self.maxFileSize + 1))
        while let last = digits.last, last == 0x0A || last == 0x0D || last == 0x20 || last == 0x09 {
            digits.removeLast()
        }
        guard digits.count == Self.byteCount * 2 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.byteCount)
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let high = Self.nibble(digits[index]), let low = Self.nibble(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        self.bytes = bytes
    }

    private init(unchecked bytes: [UInt8]) { self.bytes = bytes }

    /// The key as 64 lowercase hex digits (ASCII).
    public var hex: [UInt8] {
        let digits = Array("0123456789abcdef".utf8)
        var result: [UInt8] = []
        result.reserveCapacity(Self.byteCount * 2)
        for byte in bytes {
            result.append(digits[Int(byte >> 4)])
            result.append(digits[Int(byte & 0x0F)])
        }
        return result
    }

    /// Whether `other` is this key, in time that does not depend on where they differ.
    public func matches(_ other: ControlKey) -> Bool {
        var difference: UInt8 = 0
        for index in 0..<Self.byteCount { difference |= bytes[index] ^ other.bytes[index] }
        return difference == 0
    }

    public var description: String { "ControlKey(redacted)" }
    public var customMirror: Mirror { Mirror(self, children: [:]) }

    private static func nibble(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
