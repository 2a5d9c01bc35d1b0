import CorralCore
import Foundation

/// Finds corral.toml for commands that need templates: `--config FILE`, else `CORRAL_CONFIG`,
/// else `$STATE/corral.toml` when it exists.
public enum ConfigurationDiscovery {
    /// The file to read; nil when none was named and `$STATE/corral.toml` is absent.
    public static func locate(explicit: String?, environment: [String: String], stateDirectory: URL) -> URL? {
        if let explicit, !explicit.isEmpty { return URL(fileURLWithPath: explicit) }
        if let named = environment["CORRAL_CONFIG"], !named.isEmpty { return URL(fileURLWithPath: named) }
        let fallback = stateDirectory.appendingPathComponent("corral.toml")
        return FileManager.default.fileExists(atPath: fallback.path) ? fallback : nil
    }

    /// The configuration found as `locate` says, or nil when there is none to find. A file that
    /// was named but cannot be read is an error.
    public static func load(explicit: String?, environment: [String: String], stateDirectory: URL) throws
        -> CorralConfiguration?
    {
        guard let file = locate(explicit: explicit, environment: environment, stateDirectory: stateDirectory) else {
            return nil
        }
        return try CorralConfiguration.load(file: file)
    }
}
