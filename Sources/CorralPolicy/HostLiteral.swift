import Glibc

/// Address literals, told apart from host names without asking a resolver.
public enum HostLiteral {
    /// True for an IPv4 address in any spelling `inet_aton` takes (dotted quad, but also
    /// `127.1`, `0x7f.0.0.1`, `017700000001`, `2130706433`, `0`) or an IPv6 literal without
    /// brackets: everything a resolver would turn into an address without asking DNS.
    public static func isLiteral(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_aton(host, &v4) != 0 || inet_pton(AF_INET6, host, &v6) == 1
    }
}
