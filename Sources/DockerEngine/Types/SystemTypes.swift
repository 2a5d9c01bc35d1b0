/// `GET /version`.
public struct EngineVersion: Decodable, Sendable {
    public var version: String
    public var apiVersion: String
    public var minAPIVersion: String?
    public var os: String?
    public var arch: String?
    public var kernelVersion: String?

    enum CodingKeys: String, CodingKey {
        case version = "Version", apiVersion = "ApiVersion", minAPIVersion = "MinAPIVersion", os = "Os", arch = "Arch"
        case kernelVersion = "KernelVersion"
    }
}

/// `GET /info`, the fields corral reads.
public struct EngineInfo: Decodable, Sendable {
    public var serverVersion: String?
    public var operatingSystem: String?
    public var runtimes: [String: Runtime]
    public var defaultRuntime: String?
    public var memTotal: Int64?
    public var ncpu: Int?
    public var driver: String?
    public var containers: Int?

    public struct Runtime: Decodable, Sendable {
        public var path: String?
        public var runtimeArgs: [String]?

        enum CodingKeys: String, CodingKey { case path, runtimeArgs }
    }

    enum CodingKeys: String, CodingKey {
        case serverVersion = "ServerVersion", operatingSystem = "OperatingSystem", runtimes = "Runtimes"
        case defaultRuntime = "DefaultRuntime", memTotal = "MemTotal", ncpu = "NCPU", driver = "Driver"
        case containers = "Containers"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        serverVersion = try container.decodeIfPresent(String.self, forKey: .serverVersion)
        operatingSystem = try container.decodeIfPresent(String.self, forKey: .operatingSystem)
        runtimes = try container.decodeIfPresent([String: Runtime].self, forKey: .runtimes) ?? [:]
        defaultRuntime = try container.decodeIfPresent(String.self, forKey: .defaultRuntime)
        memTotal = try container.decodeIfPresent(Int64.self, forKey: .memTotal)
        ncpu = try container.decodeIfPresent(Int.self, forKey: .ncpu)
        driver = try container.decodeIfPresent(String.self, forKey: .driver)
        containers = try container.decodeIfPresent(Int.self, forKey: .containers)
    }
}

/// `GET /images/{name}/json`, the fields corral reads.
public struct ImageInspect: Decodable, Sendable {
    public var id: String
    public var repoTags: [String]?
    public var size: Int64?
    public var config: Config?

    public struct Config: Decodable, Sendable {
        public var labels: [String: String]?
        public var user: String?
        public var workingDir: String?
        enum CodingKeys: String, CodingKey { case labels = "Labels", user = "User", workingDir = "WorkingDir" }
    }

    enum CodingKeys: String, CodingKey { case id = "Id", repoTags = "RepoTags", size = "Size", config = "Config" }
}

/// One line of `GET /events`.
public struct EngineEvent: Decodable, Sendable {
    /// container, image, volume, network, daemon, ...
    public var type: String
    /// create, start, die, destroy, rename, oom, ...
    public var action: String
    public var actor: Actor
    public var timeNano: Int64?

    public struct Actor: Decodable, Sendable {
        public var id: String
        public var attributes: [String: String]
        enum CodingKeys: String, CodingKey { case id = "ID", attributes = "Attributes" }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            id = try container.decodeIfPresent(String.self, forKey: .id) ?? ""
            attributes = try container.decodeIfPresent([String: String].self, forKey: .attributes) ?? [:]
        }
    }

    enum CodingKeys: String, CodingKey { case type = "Type", action = "Action", actor = "Actor", timeNano }
}

/// A container's path, as `HEAD /containers/{id}/archive` describes it.
public struct PathStat: Codable, Sendable {
    public var name: String
    public var size: Int64
    /// Go's os.FileMode bits: the directory bit is 1 << 31, the symlink bit 1 << 27.
    public var mode: UInt32
    public var linkTarget: String?

    public var isDirectory: Bool { mode & (1 << 31) != 0 }
    public var isSymlink: Bool { mode & (1 << 27) != 0 }

    enum CodingKeys: String, CodingKey { case name, size, mode, linkTarget }
}
