import CorralCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Where things are inside every sandbox, and where the host keeps what it mounts in.
public struct SandboxEnvironment: Sendable, Hashable {
    /// Host path of the static `corral-init` binary. For a remote engine, the path on the
    /// engine's host.
    public var initBinary: String
    /// The sandbox user's name; its uid and gid are the sandbox's own (`SandboxUser`).
    public var userName = "agent"
    public var workspace = "/workspace"
    /// HOME: a tmpfs owned by the user, so tools that write dotfiles work on a read-only root.
    public var home = "/home/agent"
    /// Host directory holding one directory per sandbox (`<id>/gateway/`, bind-mounted at
    /// `/.corral/gateway`). The gateway serves `gateway.sock` there; nil leaves sandboxes
    /// without one (no egress at all), and keeps their other host files (workspace, passwd)
    /// in `ephemeralSandboxes`.
    public var sandboxesDirectory: URL?
    /// Where sandboxes' host files go when there is no state directory.
    public static let ephemeralSandboxes = FileManager.default.temporaryDirectory.appendingPathComponent(
        "corral-ephemeral/sandboxes", isDirectory: true)
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

    /// The host directory of one sandbox: its record, gateway directory, workspace and the
    /// passwd and group files it sees.
    public func hostDirectory(for sandbox: SandboxID) -> URL {
        (sandboxesDirectory ?? Self.ephemeralSandboxes).appendingPathComponent(sandbox.rawValue, isDirectory: true)
    }

    /// The host directory of one sandbox's gateway socket.
    public func gatewayDirectory(for sandbox: SandboxID) -> URL? {
        guard sandboxesDirectory != nil else { return nil }
        return hostDirectory(for: sandbox).appendingPathComponent("gateway", isDirectory: true)
    }

    /// The host side of the sandbox's /workspace (see `WorkspaceDisk`).
    func workspaceDirectory(for sandbox: SandboxID) -> URL {
        hostDirectory(for: sandbox).appendingPathComponent(WorkspaceDisk.mountName, isDirectory: true)
    }

    /// The passwd and group files bind-mounted over the image's.
    func accountFiles(for sandbox: SandboxID) -> (passwd: URL, group: URL) {
        let etc = hostDirectory(for: sandbox).appendingPathComponent("etc", isDirectory: true)
        return (etc.appendingPathComponent("passwd"), etc.appendingPathComponent("group"))
    }

    /// Makes what the host keeps for a sandbox, with its workspace mounted: the two steps
    /// below, one after the other.
    public func prepareHostDirectory(for sandbox: SandboxID, disk: ByteSize) async throws {
        try makeHostDirectory(for: sandbox, disk: disk)
        do {
            try await mountWorkspace(for: sandbox, disk: disk)
        } catch {
            removeHostDirectory(for: sandbox)
            throw error
        }
    }

    /// Makes what the host keeps for a sandbox before its container is created:
    /// - its directory, 0700, in a 0700 sandboxes directory: no host user but root reads it;
    /// - the gateway directory, root:<sandbox gid> 0750: reachable by the sandbox (it is
    ///   mounted there read-only) and by the service, by no other sandbox (none mounts it)
    ///   and no host user (no account holds the gid, and the parents are 0700);
    /// - `etc/passwd` and `etc/group` naming the sandbox's user;
    /// - the workspace directory: with a `disk`, the mount point `mountWorkspace` fills;
    ///   with a disk of 0, a plain directory of the sandbox's user without a size limit.
    /// On failure nothing is left.
    func makeHostDirectory(for sandbox: SandboxID, disk: ByteSize) throws {
        let directory = hostDirectory(for: sandbox)
        let user = SandboxUser(for: sandbox)
        do {
            try PrivateDirectory.make(directory.deletingLastPathComponent())
            try PrivateDirectory.make(directory)
            if let gateway = gatewayDirectory(for: sandbox) {
                try Self.makeDirectory(gateway, mode: 0o750, group: user.gid)
            }
            let files = accountFiles(for: sandbox)
            try Self.makeDirectory(files.passwd.deletingLastPathComponent(), mode: 0o755, group: 0)
            try Data(user.passwd(name: userName, home: home).utf8).write(to: files.passwd)
            try Data(user.group(name: userName).utf8).write(to: files.group)
            chmod(files.passwd.path, 0o644)
            chmod(files.group.path, 0o644)
            let workspace = workspaceDirectory(for: sandbox)
            try Self.makeDirectory(workspace, mode: 0o755, group: disk.bytes > 0 ? 0 : user.gid)
            if disk.bytes == 0 {
                guard chown(workspace.path, user.uid, user.gid) == 0 else {
                    throw CorralError(
                        .permissionDenied,
                        "cannot give the workspace \(workspace.path) to the sandbox's user: \(String(cString: strerror(errno)))",
                        hint: "corral gives every sandbox a uid of its own, which needs root")
                }
            }
        } catch let error as CorralError {
            SandboxHostDirectory.remove(directory)
            throw error
        } catch {
            SandboxHostDirectory.remove(directory)
            throw CorralError(
                .io, "cannot make the sandbox directory \(directory.path)",
                hint: "check the state directory's permissions", underlying: error)
        }
    }

    /// Mounts the workspace's own file system of `disk` (see `WorkspaceDisk`) on the mount point
    /// `makeHostDirectory` made; nothing for a disk of 0. The engine resolves bind mounts
    /// when the container starts, so this may run while the container is being created.
    func mountWorkspace(for sandbox: SandboxID, disk: ByteSize) async throws {
        guard disk.bytes > 0 else { return }
        _ = try await WorkspaceDisk.make(in: hostDirectory(for: sandbox), size: disk, owner: SandboxUser(for: sandbox))
    }

    private static func makeDirectory(_ url: URL, mode: mode_t, group: gid_t) throws {
        if mkdir(url.path, mode) != 0 && errno != EEXIST {
            throw CorralError(.io, "cannot make \(url.path): \(String(cString: strerror(errno)))")
        }
        guard chown(url.path, 0, group) == 0, chmod(url.path, mode) == 0 else {
            throw CorralError(
                .permissionDenied, "cannot set the owner of \(url.path): \(String(cString: strerror(errno)))",
                hint: "corral gives every sandbox a uid of its own, which needs root")
        }
    }

    /// Removes what the host kept for a sandbox, its workspace included.
    public func removeHostDirectory(for sandbox: SandboxID) {
        SandboxHostDirectory.remove(hostDirectory(for: sandbox))
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
