import CorralCore
import Foundation
import TestSupport
import Testing

@Suite("corral --version")
struct VersionCLITests {
    @Test("--version and version --json print the same version, and need no engine, state or service")
    func version() async throws {
        let environment = ["CORRAL_ENGINE": "unix:///nonexistent.sock", "CORRAL_STATE_DIR": "/nonexistent/state"]
        let plain = try await onOwnThread { try runCorral(["--version"], environment: environment) }
        #expect(plain.status == 0 && plain.stdout == "corral \(CorralVersion.current)\n", "\(plain.stderr)")
        let json = try await onOwnThread { try runCorral(["version", "--json"], environment: environment) }
        #expect(json.status == 0)
        let decoded = try JSONDecoder().decode([String: String].self, from: Data(json.stdout.utf8))
        #expect(decoded == ["version": CorralVersion.current, "api": "v1"])
        // corral links libcurl only when a command needs it (dlopen): printing a version does not.
        let maps = try await onOwnThread {
            try runCorral(["--version"], environment: environment + ["LD_DEBUG": "files"])
        }
        #expect(!maps.stderr.contains("libcurl"), "libcurl was loaded to print a version")
    }
}

extension Dictionary where Key == String, Value == String {
    fileprivate static func + (lhs: Self, rhs: Self) -> Self { lhs.merging(rhs) { _, new in new } }
}
