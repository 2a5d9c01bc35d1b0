import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Where an allow-listed host name really points. A name on the allow-list that resolves to
/// a loopback, private or link-local address (DNS rebinding, or a name planted to reach the
/// host's own services or a cloud metadata endpoint) is refused; an address written as a
/// literal on the allow-list is taken at its word.
enum EgressAddress {
    /// Resolves `host` on NIO's blocking thread pool (getaddrinfo blocks).
    static func resolve(_ host: String, port: Int) async throws -> SocketAddress {
        try await NIOThreadPool.singleton.runIfActive {
            try SocketAddress.makeAddressResolvingHost(host, port: port)
        }
    }

    /// True for an IPv4 or IPv6 literal (without brackets).
    static func isLiteral(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }

    /// Loopback, private, link-local, carrier-grade NAT, unspecified or multicast.
    static func isInternal(_ address: SocketAddress) -> Bool {
        switch address {
        case .v4(let v4):
            return isInternal(ipv4: UInt32(bigEndian: v4.address.sin_addr.s_addr))
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            guard bytes.count == 16 else { return true }
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
                let mapped = bytes[12...].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                return isInternal(ipv4: mapped)
            }
            if bytes[0..<15].allSatisfy({ $0 == 0 }) { return true }  // :: and ::1
            if bytes[0] == 0xfe && (bytes[1] & 0xc0) == 0x80 { return true }  // fe80::/10
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
    }
}
