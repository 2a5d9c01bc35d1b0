import CorralCore
import DockerEngine
import Foundation

/// What a container is made of: the facts fixed at creation, shared by every sandbox of one
/// template (or of one cold request). Per-session settings are not here: they are bound later,
/// in the sandbox's record.
public struct ContainerShape: Sendable, Hashable {
    public var image: String
    public var runtime: SandboxRuntime
    public var resources: SandboxResources
    /// Environment baked into the container (a template's env; no secrets).
    public var env: [String: String]

    public init(image: String, runtime: SandboxRuntime, resources: SandboxResources, env: [String: String]) {
        self.image = image
        self.runtime = runtime
        self.resources = resources
        self.env = env
    }

    /// The engine's create request for this sandbox: the hardened default.
    ///
    /// No network but loopback; every capability dropped; no-new-privileges with the
    /// engine's default seccomp profile; a read-only root with a writable /workspace of its
    /// own size (see `WorkspaceDisk`), a /tmp tmpfs and a tmpfs HOME; memory equal to
    /// memory+swap; a pids limit; nofile, fsize and core limits; no logging driver; runs as the
    /// sandbox's own uid and gid (`SandboxUser`), named in passwd and group files of its own,
    /// under corral-init as PID 1.
    public func containerSpec(
        sandbox: SandboxID, environment: SandboxEnvironment, created: Date, instance: String,
        extraLabels: [String: String] = [:]
    ) -> ContainerCreateRequest {
        var spec = ContainerCreateRequest(image: image)
        spec.entrypoint = [SandboxEnvironment.initPath]
        spec.cmd = []
        let user = SandboxUser(for: sandbox)
        spec.user = user.description
        spec.workingDir = environment.workspace
        var variables = [
            "HOME=\(environment.home)",
            "CORRAL_SANDBOX=\(sandbox)",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]
        let gatewayHostDirectory = environment.gatewayDirectory(for: sandbox)
        if gatewayHostDirectory != nil {
            // Every way out goes through corral-init's forwarder to this sandbox's gateway.
            let proxy = "http://\(SandboxEnvironment.proxyAddress)"
            variables += [
                "CORRAL_GATEWAY_SOCKET=\(SandboxEnvironment.gatewaySocket)",
                "CORRAL_CONTROL_SOCKET=\(SandboxEnvironment.controlSocket)",
                "HTTP_PROXY=\(proxy)", "HTTPS_PROXY=\(proxy)", "http_proxy=\(proxy)", "https_proxy=\(proxy)",
                "NO_PROXY=localhost,127.0.0.1", "no_proxy=localhost,127.0.0.1",
            ]
        }
        variables += env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        spec.env = variables
        spec.stopSignal = "SIGTERM"
        spec.stopTimeout = 5
        spec.hostname = "sandbox"

        var labels: [String: String] = [
            SandboxLabels.managed: "1",
            SandboxLabels.sandbox: sandbox.rawValue,
            SandboxLabels.instance: instance,
            SandboxLabels.created: String(Int64(created.timeIntervalSince1970)),
            SandboxLabels.runtime: runtime.rawValue,
        ]
        labels.merge(extraLabels) { _, new in new }
        spec.labels = labels

        var host = HostConfig()
        host.networkMode = "none"
        host.capDrop = ["ALL"]
        host.securityOpt = ["no-new-privileges"]
        host.readonlyRootfs = true
        host.tmpfs = [
            "/tmp": "rw,nosuid,nodev,size=\(resources.tmpSize.bytes),mode=1777",
            environment.home: "rw,nosuid,nodev,size=64m,mode=0755,uid=\(user.uid),gid=\(user.gid)",
        ]
        let accounts = environment.accountFiles(for: sandbox)
        host.mounts = [
            HostConfig.Mount(
                type: "bind", source: environment.workspaceDirectory(for: sandbox).path, target: environment.workspace),
            HostConfig.Mount(
                type: "bind", source: environment.initBinary, target: SandboxEnvironment.initPath, readOnly: true),
            HostConfig.Mount(type: "bind", source: accounts.passwd.path, target: "/etc/passwd", readOnly: true),
            HostConfig.Mount(type: "bind", source: accounts.group.path, target: "/etc/group", readOnly: true),
        ]
        if let gatewayHostDirectory {
            host.mounts?.append(
                HostConfig.Mount(
                    type: "bind", source: gatewayHostDirectory.path, target: SandboxEnvironment.gatewayDirectory,
                    readOnly: true))
        }
        host.pidsLimit = Int64(resources.pids)
        host.memory = resources.memory.bytes
        host.memorySwap = resources.memory.bytes
        host.nanoCpus = Int64((resources.cpus * 1e9).rounded())
        host.ulimits = [
            HostConfig.Ulimit(name: "nofile", soft: Int64(resources.openFiles), hard: Int64(resources.openFiles)),
            HostConfig.Ulimit(name: "fsize", soft: resources.maxFileSize.bytes, hard: resources.maxFileSize.bytes),
            HostConfig.Ulimit(name: "core", soft: 0, hard: 0),
        ]
        host.logConfig = HostConfig.LogConfig(type: "none")
        host.restartPolicy = HostConfig.RestartPolicy(name: "no")
        host.ipcMode = "private"
        host.shmSize = 64 << 20
        host.runtime = runtime.rawValue
        spec.hostConfig = host
        return spec
    }
}
