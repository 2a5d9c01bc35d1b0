import CorralCore
import CorralPolicy

/// The container runtime a sandbox runs under.
public struct SandboxRuntime: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    /// The engine's default: namespaces and cgroups on the host kernel.
    public static let runc = SandboxRuntime(rawValue: "runc")
    /// gVisor: a user-space kernel between the sandbox and the host.
    public static let runsc = SandboxRuntime(rawValue: "runsc")

    public init(parsing text: String) throws {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "/") }) else {
            throw CorralError.invalidArgument("invalid runtime '\(text)'", hint: "use runc or runsc")
        }
        self.init(rawValue: text)
    }
}

/// Limits a sandbox runs under. Defaults suit one agent's shell work.
public struct SandboxResources: Hashable, Sendable, Codable {
    /// Memory, with swap equal to it (no swap).
    public var memory: ByteSize = .gibibytes(1)
    /// CPU share, in cores (1.5 = one and a half).
    public var cpus: Double = 1
    /// Processes and threads the sandbox may hold at once: a fork bomb stops here.
    public var pids: Int = 256
    /// Size of the /tmp tmpfs (it counts against memory).
    public var tmpSize: ByteSize = .mebibytes(256)
    /// Largest file a process may write (RLIMIT_FSIZE).
    public var maxFileSize: ByteSize = .gibibytes(4)
    /// Open files per process (RLIMIT_NOFILE).
    public var openFiles: Int = 4096
    /// Size of /workspace: a file system of its own (see `WorkspaceDisk`). 0 is a plain
    /// directory without a size limit, for the operator only.
    public var disk: ByteSize = .gibibytes(10)

    public init() {}

    /// The largest values accepted: beyond them the engine or the kernel refuses, with an
    /// answer that names host paths.
    static let maxMemory = ByteSize.tebibytes(1)
    static let maxPids = 1 << 22  // the kernel's pid_max limit
    static let maxOpenFiles = 1 << 20  // the kernel's default nr_open
    static let maxBytes = ByteSize.tebibytes(16)
    static let minDisk = ByteSize.mebibytes(64)

    public func validated() throws -> SandboxResources {
        guard memory.bytes >= 6 << 20, memory <= Self.maxMemory else {
            throw CorralError.invalidArgument(
                "memory \(memory) is out of range", hint: "give a sandbox between 6m (the engine's minimum) and 1t")
        }
        // The kernel takes a CPU quota of at least 1 ms per 100 ms period: 0.01 of a core.
        guard cpus >= 0.01, cpus <= 1024, cpus.isFinite else {
            throw CorralError.invalidArgument(
                "cpus must be between 0.01 and 1024, got \(cpus)", hint: "use a number of cores such as 0.5 or 2")
        }
        guard pids >= 8, pids <= Self.maxPids else {
            throw CorralError.invalidArgument(
                "pids must be between 8 and \(Self.maxPids), got \(pids)", hint: "use a process limit such as 256")
        }
        guard openFiles >= 16, openFiles <= Self.maxOpenFiles else {
            throw CorralError.invalidArgument(
                "open files must be between 16 and \(Self.maxOpenFiles), got \(openFiles)")
        }
        guard tmpSize.bytes > 0, tmpSize <= Self.maxBytes, maxFileSize.bytes > 0, maxFileSize <= Self.maxBytes else {
            throw CorralError.invalidArgument("tmp size and file size must be more than 0 and at most 16t")
        }
        guard disk.bytes == 0 || (disk >= Self.minDisk && disk <= Self.maxBytes) else {
            throw CorralError.invalidArgument(
                "disk \(disk) is out of range", hint: "give a workspace between 64m and 16t (0: no size limit)")
        }
        return self
    }
}

/// Everything needed to make one sandbox.
///
/// With `template` set, the sandbox comes from that template (claimed from its warm pool when
/// a member is idle, else made cold) and `image`, `runtime` and `resources` are not used. The
/// rest is per session and is bound after the claim, so it never keeps a request off the warm
/// path.
public struct ProvisionRequest: Sendable {
    public var image: String
    public var runtime: SandboxRuntime = .runc
    public var resources = SandboxResources()
    /// The template to claim from or to make the sandbox of.
    public var template: TemplateName?
    /// Removed by the reaper this long after it is handed out; nil takes the template's ttl,
    /// or keeps it until removed.
    public var ttl: Duration?
    /// Removed by the reaper once no command ran for this long; nil takes the template's.
    public var idleTTL: Duration?
    /// Labels of the caller's own, recorded with the sandbox (keys must not start with `corral.`).
    public var labels: [String: String] = [:]
    /// Environment for every command, in `KEY=value` form. Never put credentials here.
    public var env: [String: String] = [:]
    public var tenant: TenantID = .local
    public var session: SessionID?
    /// A repository to clone into /workspace through the gateway; nil takes the template's,
    /// if any. Bound after a warm claim like the rest.
    public var workspace: SandboxWorkspace?
    /// Hosts the sandbox may reach through its gateway, beside the template's `egress`.
    public var egressHosts: [String] = []

    public static let defaultImage = "corral/base:bookworm"

    public init(image: String = ProvisionRequest.defaultImage) {
        self.image = image
    }

    func validated() throws -> ProvisionRequest {
        var copy = self
        copy.resources = try resources.validated()
        guard !image.isEmpty, !image.contains(where: { $0.isWhitespace }) else {
            throw CorralError.invalidArgument("invalid image reference '\(image)'")
        }
        for key in labels.keys {
            guard !key.isEmpty, !key.hasPrefix("corral."), !key.contains("=") else {
                throw CorralError.invalidArgument(
                    "invalid label key '\(key)'",
                    hint: "label keys are non-empty, have no '=', and do not start with 'corral.'")
            }
        }
        for key in env.keys {
            guard !key.isEmpty, !key.contains("="), !key.contains("\0") else {
                throw CorralError.invalidArgument("invalid environment variable name '\(key)'")
            }
        }
        if let ttl, ttl <= .zero {
            throw CorralError.invalidArgument("ttl must be positive, got \(ttl.compactDescription)")
        }
        if let idleTTL, idleTTL <= .zero {
            throw CorralError.invalidArgument("idle ttl must be positive, got \(idleTTL.compactDescription)")
        }
        copy.workspace = try workspace?.validated()
        copy.egressHosts = try egressHosts.map(GatewayPolicy.checkEgressHost)
        return copy
    }
}
