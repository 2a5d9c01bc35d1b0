import CorralCore
import Foundation
import TestSupport
import Testing

@Suite("corral --version")
struct VersionCLITests {
    @Test("--version and version --json print the same version, and need no engine, state or service")
    func version() async throws {
        let environment = ["CORRAL_ENGINE": "unix:///nonexistent.sock", "CORRAL_STATE_DIR": "/nonexistent/state"]
        let plain = try await onOwnThread { try runCorralBlocking(["--version"], environment: environment) }
        #expect(plain.status == 0 && plain.stdout == "corral \(CorralVersion.current)\n", "\(plain.stderr)")
        let json = try await onOwnThread { try runCorralBlocking(["version", "--json"], environment: environment) }
        #expect(json.status == 0)
        let decoded = try JSONDecoder().decode([String: String].self, from: Data(json.stdout.utf8))
        #expect(decoded == ["version": CorralVersion.current, "api": "v1"])
        // corral opens libcurl and libarchive only when a command needs them (dlopen): printing
        // a version loads neither (the loader's own list of what it opens shows it).
        let maps = try await onOwnThread {
            try runCorralBlocking(["--version"], environment: environment + ["LD_DEBUG": "files"])
        }
        #expect(maps.stderr.contains("libc.so.6"), "LD_DEBUG=files printed nothing: \(maps.stderr.prefix(300))")
        #expect(!maps.stderr.contains("libcurl"), "libcurl was loaded to print a version")
        #expect(!maps.stderr.contains("libarchive"), "libarchive was loaded to print a version")
    }
}

extension Dictionary where Key == String, Value == String {
    fileprivate static func + (lhs: Self, rhs: Self) -> Self { lhs.merging(rhs) { _, new in new } }
}
