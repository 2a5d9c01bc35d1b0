/// corral's version: what `corral --version` prints and `/v1/health` reports.
public enum CorralVersion {
    public static let current = "0.12.0"
    /// The HTTP API's version, the first segment of its paths.
    public static let api = "v1"
}
