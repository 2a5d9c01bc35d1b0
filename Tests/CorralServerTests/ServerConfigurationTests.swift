import CorralCore
import CorralService
import Testing

/// The `[server]` keys of security review finding 7 (and the stop of finding 6).
@Suite("[server] timeouts in corral.toml")
struct ServerConfigurationTests {
    @Test("header_timeout, idle_timeout and shutdown_timeout parse, with their defaults")
    func keys() throws {
        let defaults = try CorralConfiguration.parse("")
        #expect(defaults.server.headerTimeout == .seconds(30))
        #expect(defaults.server.idleTimeout == .seconds(60))
        #expect(defaults.server.shutdownTimeout == .seconds(30))
        let set = try CorralConfiguration.parse(
            "[server]\nheader_timeout = \"2s\"\nidle_timeout = \"5m\"\nshutdown_timeout = \"10s\"\n")
        #expect(set.server.headerTimeout == .seconds(2))
        #expect(set.server.idleTimeout == .seconds(300))
        #expect(set.server.shutdownTimeout == .seconds(10))
    }

    @Test("a header_timeout over 30s, or of 0, is refused in one line")
    func limits() {
        for text in ["\"31s\"", "\"0s\"", "\"soon\""] {
            let error = #expect(throws: CorralError.self) {
                try CorralConfiguration.parse("[server]\nheader_timeout = \(text)\n")
            }
            #expect(error?.message.contains("header_timeout") == true, "\(text): \(error?.message ?? "")")
            #expect(error?.message.contains("\n") == false)
        }
    }
}
