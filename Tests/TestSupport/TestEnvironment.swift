import CorralCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What the tests may assume about the machine they run on.
///
/// Tests that need a container engine call `TestEnvironment.engineTrait`: the test runs
/// when an engine answers, or when `CORRAL_REQUIRE_ENGINE=1` (CI) asks for it, in which case
/// a missing engine is a failure, not a skip. Otherwise it is skipped with the reason printed.
public enum TestEnvironment {
    public static var engineRequired: Bool {
        ProcessInfo.processInfo.environment["CORRAL_REQUIRE_ENGINE"] == "1"
    }

    /// The engine endpoint the tests use: `CORRAL_ENGINE`, else the default docker socket.
    public static var engineEndpoint: String {
        ProcessInfo.processInfo.environment["CORRAL_ENGINE"] ?? "unix:///var/run/docker.sock"
    }

    /// True when a unix-socket engine endpoint accepts a connection right now.
    public static var engineReachable: Bool {
        let endpoint = engineEndpoint
        guard endpoint.hasPrefix("unix://") else { return true }  // TCP: let the test find out
        return unixSocketAccepts(path: String(endpoint.dropFirst("unix://".count)))
    }

    /// Whether engine tests should run: reachable, or required (and then they fail loudly).
    public static var shouldRunEngineTests: Bool { engineReachable || engineRequired }

    public static var engineSkipReason: String {
        "no container engine answers at \(engineEndpoint); start one with `make engine` (set CORRAL_REQUIRE_ENGINE=1 to make this a failure)"
    }

    /// The base image the engine tests use.
    public static var baseImage: String {
        ProcessInfo.processInfo.environment["CORRAL_TEST_IMAGE"] ?? "corral/base:bookworm"
    }

    /// True when something accepts a TCP connection on 127.0.0.1:`port`.
    public static func tcpPortAccepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return result == 0
    }

    public static func unixSocketAccepts(path: String) -> Bool {
        UnixSocketPath.accepts(path)
    }
}

/// A temporary directory removed when the closure returns.
public func withTemporaryDirectory<T>(_ body: (URL) async throws -> T) async throws -> T {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("corral-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: url) }
    return try await body(url)
}

/// `body` again until it succeeds or `limit` passes (then its last error): for a first
/// connection to a server a test has just started, which a loaded machine may take longer to
/// accept than the short timeouts the test itself is about.
public func retrying<T>(for limit: Duration, _ body: () async throws -> T) async throws -> T {
    let deadline = ContinuousClock.now + limit
    while true {
        do {
            return try await body()
        } catch  where ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(250))
        }
    }
}
