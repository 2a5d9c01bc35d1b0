/// The body of `POST /containers/{id}/exec`.
public struct ExecCreateRequest: Encodable, Sendable, Hashable {
    public var cmd: [String]
    public var env: [String]?
    public var workingDir: String?
    public var user: String?
    public var attachStdout = true
    public var attachStderr = true
    public var attachStdin = false
    public var tty = false

    public init(cmd: [String], env: [String]? = nil, workingDir: String? = nil, user: String? = nil) {
        self.cmd = cmd
        self.env = env
        self.workingDir = workingDir
        self.user = user
    }

    enum CodingKeys: String, CodingKey {
        case cmd = "Cmd", env = "Env", workingDir = "WorkingDir", user = "User", attachStdout = "AttachStdout"
        case attachStderr = "AttachStderr", attachStdin = "AttachStdin", tty = "Tty"
    }
}

/// `GET /exec/{id}/json`.
public struct ExecInspect: Decodable, Sendable {
    public var running: Bool
    /// Null while running, and briefly after the output stream has closed.
    public var exitCode: Int?
    public var pid: Int?

    enum CodingKeys: String, CodingKey { case running = "Running", exitCode = "ExitCode", pid = "Pid" }
}

struct IDResponse: Decodable {
    var id: String
    enum CodingKeys: String, CodingKey { case id = "Id" }
}
