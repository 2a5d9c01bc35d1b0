import CorralCore
import CorralPolicy
import NIOCore

/// Whether the gateway may connect to an address on behalf of a tenant's sandbox: one rule for
/// everything the gateway dials (CONNECT tunnels, plain HTTP, git upstreams, mirror fetches)
/// and for the check at provisioning.
///
/// The decision is made on the address actually connected to, after resolution, so that no
/// spelling (`127.1`, `0x7f.0.0.1`, `2130706433`, `0`, `[::ffff:127.0.0.1]`, `localhost`, a
/// name whose DNS answer points inside) changes it:
///
/// - An address that is not internal (see `EgressAddress.isInternal`) may be dialled.
/// - An internal address may be dialled when the operator's `private_hosts` (corral.toml
///   `[gateway]`) has an entry for it: a name entry (`git.internal:8080`) matches the host as
///   the sandbox asked for it, with that port; an address entry (`127.0.0.1:8080`,
///   `[::1]:8080`) matches the resolved address and port, whatever spelling led there.
/// - The local tenant's sandboxes are the operator's own: they may also dial an internal
///   address they wrote as an address literal. A name they ask for that resolves inside is
///   still refused (DNS rebinding), unless `private_hosts` lists it.
/// - Every other tenant (a network tenant) gets nothing else internal, whatever its
///   allow-list says.
public struct DialPolicy: Sendable, Hashable {
    /// One `private_hosts` entry.
    public struct PrivateHost: Sendable, Hashable, CustomStringConvertible {
        /// Lower-cased; an IPv6 address without brackets.
        public let host: String
        public let port: Int
        /// Set when `host` is an address: its canonical text.
        let address: String?

        /// `host:port` or `[v6]:port`; a port is required, wildcards are refused, and an
        /// IPv4 address must be written as a dotted quad.
        public init(parsing entry: String) throws {
            func fail(_ why: String) -> CorralError {
                CorralError.invalidArgument(
                    "invalid private host '\(entry.prefix(200))': \(why)",
                    hint: "write host:port, such as git.internal:8080, 127.0.0.1:8080 or [::1]:8080")
            }
            let lowered = entry.lowercased()
            guard !lowered.contains("*") else { throw fail("wildcards are not accepted here") }
            guard !lowered.contains("/") else { throw fail("a host and port, not a URL") }
            guard let (host, port) = GatewayPolicy.splitEntry(lowered), let port else {
                throw fail("it needs a port")
            }
            guard (1...65535).contains(port) else { throw fail("port \(port) is out of range") }
            do {
                _ = try GitRepository.checkHost(host.contains(":") ? "[\(host)]" : host)
            } catch let error as CorralError {
                throw fail(error.message)
            }
            if EgressAddress.isLiteral(host) {
                guard let parsed = try? SocketAddress(ipAddress: host, port: port), let text = parsed.ipAddress,
                    host.contains(":") || text == host
                else {
                    throw fail("write an IPv4 address as a dotted quad (127.0.0.1)")
                }
                address = text
            } else {
                address = nil
            }
            self.host = host
            self.port = port
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

        func matches(host requested: String, port requestedPort: Int, address resolved: SocketAddress) -> Bool {
            guard port == requestedPort else { return false }
            if let address { return resolved.ipAddress == address }
            return host == requested
        }
    }

    /// A decision with the reason a person reads (and a sandbox is told when it is a no).
    public struct Decision: Sendable, Hashable {
        public var allowed: Bool
        public var reason: String
    }

    public var privateHosts: [PrivateHost]

    /// No private hosts: network tenants reach no internal address at all.
    public init() {
        privateHosts = []
    }

    /// `host:port` entries as corral.toml's `[gateway] private_hosts` lists them.
    public init(privateHosts entries: [String]) throws {
        privateHosts = try entries.map(PrivateHost.init(parsing:))
    }

    /// The decision for connecting to `address`, reached by asking for `host` (lower-cased, an
    /// IPv6 literal without brackets) on `port`.
    func decide(tenant: TenantID, host: String, port: Int, address: SocketAddress) -> Decision {
        let shown = address.ipAddress ?? "an unknown address"
        guard EgressAddress.isInternal(address) else {
            return Decision(allowed: true, reason: "\(shown) is a public address")
        }
        if let entry = privateHosts.first(where: { $0.matches(host: host, port: port, address: address) }) {
            return Decision(allowed: true, reason: "the operator's private_hosts lists \(entry)")
        }
        let kind = EgressAddress.kind(of: address)
        let what =
            EgressAddress.isLiteral(host)
            ? "\(host) is the internal address \(shown) (\(kind))"
            : "\(host) resolves to the internal address \(shown) (\(kind))"
        if tenant == .local {
            if EgressAddress.isLiteral(host) {
                return Decision(allowed: true, reason: "the operator's own sandbox named the address \(shown) itself")
            }
            return Decision(
                allowed: false,
                reason:
                    "\(what); name the address itself, or list \(host):\(port) in corral.toml [gateway] private_hosts"
            )
        }
        return Decision(
            allowed: false,
            reason:
                "\(what), which tenant \(tenant)'s sandboxes may not reach; only the operator's corral.toml [gateway] private_hosts opens one"
        )
    }

    /// Resolves `host` once and decides on the address it gave; the caller connects to that
    /// address and no other, so a second resolution cannot answer differently. Throws
    /// `CorralError` `.permissionDenied` with the rule when refused, `.unavailable` when the
    /// name does not resolve.
    public func resolve(host: String, port: Int, tenant: TenantID) async throws -> DialTarget {
        var bare = host.lowercased()
        if bare.hasPrefix("[") && bare.hasSuffix("]") { bare = String(bare.dropFirst().dropLast()) }
        let address: SocketAddress
        do {
            address = try await EgressAddress.resolve(bare, port: port)
        } catch {
            throw CorralError(.unavailable, "cannot resolve \(bare): \(error)")
        }
        let decision = decide(tenant: tenant, host: bare, port: port, address: address)
        guard decision.allowed else { throw CorralError(.permissionDenied, decision.reason) }
        return DialTarget(host: bare, port: port, socketAddress: address, reason: decision.reason)
    }

    /// What can be refused without resolving anything: an allow-list entry for a network
    /// tenant that is itself an internal address (in any spelling) or `localhost`, unless
    /// `private_hosts` opens it. Names are checked when dialled.
    public func checkEgressEntry(_ entry: String, tenant: TenantID) throws {
        guard tenant != .local, let (host, port) = GatewayPolicy.splitEntry(entry.lowercased()),
            !host.hasPrefix("*.")
        else { return }
        let address: SocketAddress?
        if host == "localhost" || host.hasSuffix(".localhost") {
            address = try? SocketAddress(ipAddress: "127.0.0.1", port: port ?? 80)
        } else if let literal = EgressAddress.literalAddress(host, port: port ?? 80) {
            address = literal
        } else {
            return
        }
        guard let address, EgressAddress.isInternal(address) else { return }
        if let port, privateHosts.contains(where: { $0.matches(host: host, port: port, address: address) }) { return }
        let decision = decide(tenant: tenant, host: host, port: port ?? 80, address: address)
        guard decision.allowed else {
            throw CorralError(.permissionDenied, "egress host '\(entry.prefix(200))' is refused: \(decision.reason)")
        }
    }
}

/// An address the gateway may connect to, checked by `DialPolicy`: connect here, and nowhere
/// the name might resolve to later.
public struct DialTarget: Sendable {
    /// As asked for: lower-cased, an IPv6 literal without brackets.
    public let host: String
    public let port: Int
    let socketAddress: SocketAddress
    /// Why it was allowed.
    public let reason: String

    /// The address's text (`93.184.216.34`, `2606:4700::1111`).
    public var address: String { socketAddress.ipAddress ?? host }

    /// The address as URLs and curl's connect-to take it: IPv6 in brackets.
    var urlAddress: String { address.contains(":") ? "[\(address)]" : address }
}
