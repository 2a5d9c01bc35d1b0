import CorralCore

#if canImport(Glibc)
import Glibc
#endif

/// `host:port` as the listeners take it, and what a host is: the tenants' listener and the
/// worker port share these.
package enum ListenAddress {
    package static func parse(_ text: String) throws -> (String, Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw CorralError.invalidArgument(
                "invalid listen address '\(text)'", hint: "use host:port, such as 127.0.0.1:8420")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "127.0.0.1" : host, port)
    }

    /// An IPv4 or IPv6 literal (no TLS server name is sent for one).
    package static func isIPAddress(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }

    /// A loopback host: plain HTTP is allowed there (development and tests), TLS everywhere else.
    /// An address literal, not a name that merely starts like one (`127.example.com`).
    package static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" { return true }
        var address = in_addr()
        guard inet_pton(AF_INET, host, &address) == 1 else { return false }
        return UInt32(bigEndian: address.s_addr) >> 24 == 127
    }
}
