import CorralCore
import Foundation

/// Where things are inside every sandbox, and where the host keeps what it mounts in.
public struct SandboxEnvironment: Sendable, Hashable {
    /// Host path of the static `corral-init` binary. For a remote engine, the path on the
    /// engine's host.
    public var initBinary: String
    /// User and group every process runs as.
    public var user = "1000:1000"
    public var workspace = "/workspace"
    /// HOME: a tmpfs owned by the user, so tools that write dotfiles work on a read-only root.
    public var home = "/home/agent"
    /// Where `initBinary` appears inside the sandbox.
    public static let initPath = "/.corral/init"

    public init(initBinary: String) {
        self.initBinary = initBinary
    }

    /// Finds corral-init: `CORRAL_INIT`, then beside the running executable (a build
    /// directory, or an install prefix's bin), then `/usr/local/lib/corral/corral-init`.
    public static func locateInit(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        if let path = environment["CORRAL_INIT"], !path.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw CorralError(.notFound, "CORRAL_INIT names \(path), which is not an executable file")
            }
            return path
        }
        var candidates: [String] = []
        if let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            let directory = (executable as NSString).deletingLastPathComponent
            candidates.append((directory as NSString).appendingPathComponent("corral-init"))
            // A test bundle sits beside the build products.
            candidates.append(((directory as NSString).deletingLastPathComponent as NSString).appendingPathComponent("corral-init"))
            candidates.append(((directory as NSString).deletingLastPathComponent as NSString).appendingPathComponent("lib/corral/corral-init"))
        }
        candidates.append("/usr/local/lib/corral/corral-init")
        if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) {
            return found
        }
        throw CorralError(
            .notFound, "cannot find corral-init (looked in \(candidates.joined(separator: ", ")))",
            hint: "build it with `swift build --product corral-init`, or set CORRAL_INIT to its path")
    }
}
