/// What corral-init sends first on a control connection: NUL-separated fields, the protocol
/// version in decimal, corral-init's own version, and the sandbox's `ControlKey` in hex.
/// Protocol 1's hello was corral-init's version string alone; it decodes as version 1 with no
/// key, so that the host can say what is wrong. Protocols 2 and 3 share the hello; a later
/// protocol's decodes without a key (its layout is not known here).
public struct ControlHello: Sendable, CustomStringConvertible, CustomReflectable {
    /// The protocol both ends of this build speak.
    public static let protocolVersion = 3
    /// The largest hello the host reads, and the largest frame it reads before one: a peer that
    /// has not proved itself cannot make the host hold more.
    public static let maxPayload = 256
    static let maxVersionLength = 32

    public var protocolVersion: Int
    /// Printable ASCII only, at most 32 characters: it comes from the peer and goes to logs.
    public var initVersion: String
    /// Nil when the hello carries none (protocol 1, or a malformed key).
    public var key: ControlKey?

    public init(initVersion: String, key: ControlKey) {
        self.protocolVersion = Self.protocolVersion
        self.initVersion = Self.printable(initVersion.utf8)
        self.key = key
    }

    public func encoded() -> [UInt8] {
        var payload = Array(String(protocolVersion).utf8)
        payload.append(0)
        payload += Self.printable(initVersion.utf8).utf8
        payload.append(0)
        payload += key?.hex ?? []
        return payload
    }

    /// Nil when the payload is too large, or names a version but not in a form it can have.
    public init?<Payload: Collection<UInt8>>(decoding payload: Payload) {
        guard payload.count <= Self.maxPayload else { return nil }
        let fields = Array(payload).split(separator: 0, omittingEmptySubsequences: false)
        guard fields.count > 1 else {
            protocolVersion = 1
            initVersion = Self.printable(fields.first ?? [])
            key = nil
            return
        }
        guard let version = Int(String(decoding: fields[0], as: UTF8.self)), version >= 2 else { return nil }
        protocolVersion = version
        initVersion = Self.printable(fields[1])
        key = (2...Self.protocolVersion).contains(version) && fields.count == 3 ? ControlKey(hex: fields[2]) : nil
    }

    public var description: String {
        "ControlHello(protocol \(protocolVersion), corral-init \(initVersion), \(key == nil ? "no key" : "a key"))"
    }
    public var customMirror: Mirror { Mirror(self, children: [:]) }

    private static func printable<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String {
        String(decoding: bytes.lazy.filter { (0x20...0x7E).contains($0) }.prefix(maxVersionLength), as: UTF8.self)
    }
}
