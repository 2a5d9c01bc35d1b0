import CorralPolicy
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Addresses as the gateway sees them before it connects: resolution, literal spellings, and
/// which ranges are internal. `DialPolicy` decides on top of this.
enum EgressAddress {
    /// Resolves `host` on NIO's blocking thread pool (getaddrinfo blocks). Literals in every
    /// spelling getaddrinfo takes (`127.1`, `0x7f.0.0.1`, `2130706433`, `0`, `::ffff:…`) come
    /// back as the address they stand for, so the caller checks what will really be dialled.
    static func resolve(_ host: String, port: Int) async throws -> SocketAddress {
        try await NIOThreadPool.singleton.runIfActive {
            try SocketAddress.makeAddressResolvingHost(host, port: port)
        }
    }

    /// See `HostLiteral.isLiteral`.
    static func isLiteral(_ host: String) -> Bool { HostLiteral.isLiteral(host) }

    /// The address a literal stands for (see `isLiteral`), without asking a resolver; nil for
    /// a name.
    static func literalAddress(_ host: String, port: Int) -> SocketAddress? {
        var v4 = in_addr()
        if inet_aton(host, &v4) != 0 {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(clamping: port)).bigEndian
            address.sin_addr = v4
            return SocketAddress(address, host: host)
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = in_port_t(UInt16(clamping: port)).bigEndian
            address.sin6_addr = v6
            return SocketAddress(address, host: host)
        }
        return nil
    }

    /// Loopback, private, link-local, carrier-grade NAT, unspecified, multicast, reserved, and
    /// IPv6 forms that carry such an IPv4 address (mapped, compatible, NAT64, 6to4).
    static func isInternal(_ address: SocketAddress) -> Bool {
        switch address {
        case .v4(let v4):
            return isInternal(ipv4: UInt32(bigEndian: v4.address.sin_addr.s_addr))
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            guard bytes.count == 16 else { return true }
            func embedded(at offset: Int) -> UInt32 {
                bytes[offset..<offset + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            }
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
                return isInternal(ipv4: embedded(at: 12))  // ::ffff:a.b.c.d
            }
            if bytes[0..<12].allSatisfy({ $0 == 0 }) { return true }  // ::, ::1 and ::a.b.c.d
            if Array(bytes[0..<12]) == [0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] {
                return isInternal(ipv4: embedded(at: 12))  // 64:ff9b::a.b.c.d (NAT64)
            }
            if bytes[0] == 0x20 && bytes[1] == 0x02 { return isInternal(ipv4: embedded(at: 2)) }  // 6to4
            if bytes[0] == 0xfe && (bytes[1] & 0xc0) == 0x80 { return true }  // fe80::/10
            if bytes[0] == 0xfe && (bytes[1] & 0xc0) == 0xc0 { return true }  // fec0::/10 (site-local)
            if (bytes[0] & 0xfe) == 0xfc { return true }  // fc00::/7
            if bytes[0] == 0xff { return true }  // multicast
            return false
        default:
            return true
        }
    }

    static func isInternal(ipv4 address: UInt32) -> Bool {
        func within(_ network: UInt32, _ bits: UInt32) -> Bool {
            let mask: UInt32 = bits == 0 ? 0 : ~UInt32(0) << (32 - bits)
            return address & mask == network & mask
        }
        return within(0x7f00_0000, 8) || within(0x0a00_0000, 8) || within(0xac10_0000, 12) || within(0xc0a8_0000, 16)
            || within(0xa9fe_0000, 16) || within(0x6440_0000, 10) || within(0x0000_0000, 8) || within(0xe000_0000, 4)
            || within(0xf000_0000, 4) || within(0xc000_0000, 24) || within(0xc612_0000, 15)
    }

    /// What kind of internal address it is, for reasons people read.
    static func kind(of address: SocketAddress) -> String {
        guard let ip = address.ipAddress else { return "internal" }
        switch address {
        case .v4(let v4):
            let value = UInt32(bigEndian: v4.address.sin_addr.s_addr)
            if value >> 24 == 127 { return "loopback" }
            if value >> 24 == 0 { return "unspecified" }
            if value >> 16 == 0xa9fe { return "link-local" }
            if value >> 28 == 0xe { return "multicast" }
            return "private"
        default:
            if ip == "::1" || ip == "::" { return ip == "::1" ? "loopback" : "unspecified" }
            if ip.hasPrefix("::ffff:") { return "IPv4-mapped internal" }
            return "internal"
        }
    }
}
