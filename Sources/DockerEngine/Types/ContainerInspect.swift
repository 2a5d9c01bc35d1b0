import Foundation

/// `GET /containers/{id}/json`, the fields corral reads.
public struct ContainerInspect: Decodable, Sendable {
    public var id: String
    /// With the engine's leading slash removed.
    public var name: String
    public var created: String?
    public var state: State
    public var config: Config
    public var hostConfig: HostConfig?

    enum CodingKeys: String, CodingKey {
        case id = "Id", name = "Name", created = "Created", state = "State", config = "Config", hostConfig =
            "HostConfig"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        let rawName = try container.decodeIfPresent(String.self, forKey: .name) ?? ""
        name = rawName.hasPrefix("/") ? String(rawName.dropFirst()) : rawName
        created = try container.decodeIfPresent(String.self, forKey: .created)
        state = try container.decode(State.self, forKey: .state)
        config = try container.decode(Config.self, forKey: .config)
        hostConfig = try container.decodeIfPresent(HostConfig.self, forKey: .hostConfig)
    }

    public struct State: Decodable, Sendable {
        /// created, running, paused, restarting, removing, exited, dead
        public var status: String
        public var running: Bool
        public var oomKilled: Bool
        public var dead: Bool
        public var pid: Int
        public var exitCode: Int
        public var error: String?
        public var startedAt: String?
        public var finishedAt: String?

        enum CodingKeys: String, CodingKey {
            case status = "Status", running = "Running", oomKilled = "OOMKilled", dead = "Dead", pid = "Pid"
            case exitCode = "ExitCode", error = "Error", startedAt = "StartedAt", finishedAt = "FinishedAt"
        }
    }

    public struct Config: Decodable, Sendable {
        public var image: String?
        public var labels: [String: String]?
        public var env: [String]?
        public var user: String?
        public var workingDir: String?

        enum CodingKeys: String, CodingKey {
            case image = "Image", labels = "Labels", env = "Env", user = "User", workingDir = "WorkingDir"
        }
    }
}

/// One row of `GET /containers/json`.
public struct ContainerSummary: Decodable, Sendable {
    public var id: String
    /// Names without the engine's leading slash.
    public var names: [String]
    public var image: String
    public var created: Int64
    public var state: String
    public var status: String
    public var labels: [String: String]

    public var name: String { names.first ?? id }

    enum CodingKeys: String, CodingKey {
        case id = "Id", names = "Names", image = "Image", created = "Created", state = "State", status = "Status"
        case labels = "Labels"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        names = (try container.decodeIfPresent([String].self, forKey: .names) ?? []).map {
            $0.hasPrefix("/") ? String($0.dropFirst()) : $0
        }
        image = try container.decodeIfPresent(String.self, forKey: .image) ?? ""
        created = try container.decodeIfPresent(Int64.self, forKey: .created) ?? 0
        state = try container.decodeIfPresent(String.self, forKey: .state) ?? ""
        status = try container.decodeIfPresent(String.self, forKey: .status) ?? ""
        labels = try container.decodeIfPresent([String: String].self, forKey: .labels) ?? [:]
    }
}

/// `POST /containers/{id}/wait`.
public struct ContainerWaitResponse: Decodable, Sendable {
    public var statusCode: Int
    public var error: String?

    enum CodingKeys: String, CodingKey { case statusCode = "StatusCode", error = "Error" }
    enum ErrorKeys: String, CodingKey { case message = "Message" }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        statusCode = try container.decode(Int.self, forKey: .statusCode)
        if let nested = try? container.nestedContainer(keyedBy: ErrorKeys.self, forKey: .error) {
            error = try nested.decodeIfPresent(String.self, forKey: .message)
        }
    }
}

struct ContainerCreateResponse: Decodable {
    var id: String
    var warnings: [String]?

    enum CodingKeys: String, CodingKey { case id = "Id", warnings = "Warnings" }
}
