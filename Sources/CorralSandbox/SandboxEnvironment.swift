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
    /// Host directory holding one directory per sandbox (`<id>/gateway/`, bind-mounted at
    /// `/.corral/gateway`). The gateway serves `gateway.sock` there; nil leaves sandboxes
    /// without one (no egress at all).
    public var sandboxesDirectory: URL?
    /// Where `initBinary` appears inside the sandbox.
    public static let initPath = "/.corral/init"
    /// Where the sandbox's own gateway directory appears inside it.
    public static let gatewayDirectory = "/.corral/gateway"
    /// The gateway's socket, as corral-init sees it.
    public static let gatewaySocket = "/.corral/gateway/gateway.sock"
    /// The control socket corral-init dials, as it sees it (see `ControlChannels`).
    public static let controlSocket = "/.corral/gateway/\(ControlChannels.socketName)"
    /// corral-init's forwarder inside the sandbox; HTTP_PROXY points here.
    public static let proxyAddress = "127.0.0.1:3128"

    public init(initBinary: String, sandboxesDirectory: URL? = nil) {
        self.initBinary = initBinary
        self.sandboxesDirectory = sandboxesDirectory
    }

    /// The host directory of one sandbox's gateway socket.
    public func gatewayDirectory(for sandbox: SandboxID) -> URL? {
        sandboxesDirectory?.appendingPathComponent(sandbox.rawValue, isDirectory: true)
            .appendingPathComponent("gateway", isDirectory: true)
    }

    /// Makes the sandbox's gateway directory: searchable by the sandbox user, writable only by
    /// the host.
    func prepareGatewayDirectory(for sandbox: SandboxID) throws -> URL? {
        guard let directory = gatewayDirectory(for: sandbox) else { return nil }
        do {
            try FileManager.default.createDirectory(
                at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        } catch {
            throw CorralError(
                .io, "cannot make the sandbox directory \(directory.path)",
                hint: "check the state directory's permissions",
                underlying: error)
        }
        return directory
    }

    /// Removes what the host kept for a sandbox.
    func removeHostDirectory(for sandbox: SandboxID) {
        guard let directory = sandboxesDirectory?.appendingPathComponent(sandbox.rawValue, isDirectory: true) else {
            return
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// Finds corral-init: `CORRAL_INIT`, then beside the running executable (a build
    /// directory, or an install prefix's bin), then `/usr/local/lib/corral/corral-init`.
    public static func locateInit(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String
    {
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
            candidates.append(
                ((directory as NSString).deletingLastPathComponent as NSString).appendingPathComponent("corral-init"))
            candidates.append(
                ((directory as NSString).deletingLastPathComponent as NSString).appendingPathComponent(
                    "lib/corral/corral-init"))
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
