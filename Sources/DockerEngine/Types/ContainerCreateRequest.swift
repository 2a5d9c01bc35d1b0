/// The body of `POST /containers/create`: the parts of Config and HostConfig corral uses.
public struct ContainerCreateRequest: Encodable, Sendable, Hashable {
    public var image: String
    public var entrypoint: [String]?
    public var cmd: [String]?
    public var user: String?
    public var workingDir: String?
    public var env: [String] = []
    public var labels: [String: String] = [:]
    public var hostname: String?
    public var stopSignal: String?
    public var stopTimeout: Int?
    public var hostConfig: HostConfig

    public init(image: String, hostConfig: HostConfig = HostConfig()) {
        self.image = image
        self.hostConfig = hostConfig
    }

    enum CodingKeys: String, CodingKey {
        case image = "Image", entrypoint = "Entrypoint", cmd = "Cmd", user = "User", workingDir = "WorkingDir"
        case env = "Env", labels = "Labels", hostname = "Hostname", stopSignal = "StopSignal"
        case stopTimeout = "StopTimeout", hostConfig = "HostConfig"
    }
}

public struct HostConfig: Codable, Sendable, Hashable {
    public var networkMode: String?
    public var capDrop: [String]?
    public var capAdd: [String]?
    public var securityOpt: [String]?
    public var readonlyRootfs: Bool?
    /// Mount point to tmpfs options, e.g. `"/tmp": "rw,nosuid,nodev,size=64m,mode=1777"`.
    public var tmpfs: [String: String]?
    public var mounts: [Mount]?
    public var pidsLimit: Int64?
    public var memory: Int64?
    public var memorySwap: Int64?
    public var nanoCpus: Int64?
    public var ulimits: [Ulimit]?
    public var logConfig: LogConfig?
    public var runtime: String?
    /// The engine's own init (tini) as PID 1; corral never asks for it, corral-init is PID 1.
    public var dockerInit: Bool?
    public var ipcMode: String?
    public var shmSize: Int64?
    public var restartPolicy: RestartPolicy?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case networkMode = "NetworkMode", capDrop = "CapDrop", capAdd = "CapAdd", securityOpt = "SecurityOpt"
        case readonlyRootfs = "ReadonlyRootfs", tmpfs = "Tmpfs", mounts = "Mounts", pidsLimit = "PidsLimit"
        case memory = "Memory", memorySwap = "MemorySwap", nanoCpus = "NanoCpus", ulimits = "Ulimits"
        case logConfig = "LogConfig", runtime = "Runtime", dockerInit = "Init", ipcMode = "IpcMode", shmSize = "ShmSize"
        case restartPolicy = "RestartPolicy"
    }

    public struct Mount: Codable, Sendable, Hashable {
        /// `bind`, `volume` or `tmpfs`.
        public var type: String
        public var source: String?
        public var target: String
        public var readOnly: Bool?

        public init(type: String, source: String? = nil, target: String, readOnly: Bool? = nil) {
            self.type = type
            self.source = source
            self.target = target
            self.readOnly = readOnly
        }

        enum CodingKeys: String, CodingKey {
            case type = "Type", source = "Source", target = "Target", readOnly = "ReadOnly"
        }
    }

    public struct Ulimit: Codable, Sendable, Hashable {
        public var name: String
        public var soft: Int64
        public var hard: Int64

        public init(name: String, soft: Int64, hard: Int64) {
            self.name = name
            self.soft = soft
            self.hard = hard
        }

        enum CodingKeys: String, CodingKey {
            case name = "Name", soft = "Soft", hard = "Hard"
        }
    }

    public struct LogConfig: Codable, Sendable, Hashable {
        public var type: String

        public init(type: String) { self.type = type }

        enum CodingKeys: String, CodingKey { case type = "Type" }
    }

    public struct RestartPolicy: Codable, Sendable, Hashable {
        public var name: String

        public init(name: String) { self.name = name }

        enum CodingKeys: String, CodingKey { case name = "Name" }
    }
}
