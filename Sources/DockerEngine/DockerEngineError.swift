import CorralCore

/// The engine answered a request with an error status. Carries the status and the engine's
/// own message, so callers can tell "no such container" (404) from "name in use" (409).
public struct DockerEngineError: CorralErrorConvertible, Sendable, CustomStringConvertible, Equatable {
    public var status: Int
    /// The engine's `message`, or the raw body when it sent no JSON.
    public var message: String
    public var method: String
    public var path: String

    public init(status: Int, message: String, method: String, path: String) {
        self.status = status
        self.message = message
        self.method = method
        self.path = path
    }

    public var isNotFound: Bool { status == 404 }
    public var isConflict: Bool { status == 409 }
    /// 304: the container was already started or stopped.
    public var isNotModified: Bool { status == 304 }
    /// A removal the engine gave up half-way because a directory was written while it was
    /// being emptied; the container is left dead and removing it again succeeds.
    public var isFilesystemRemovalRace: Bool {
        status == 500 && message.contains("unable to remove filesystem") && message.contains("directory not empty")
    }

    public var description: String {
        "engine refused \(method) \(path) (HTTP \(status)): \(message)"
    }

    /// The same failure as a `CorralError`, for callers that present errors to users.
    public var corralError: CorralError {
        let code: CorralError.Code =
            switch status {
            case 400: .invalidArgument
            case 404: .notFound
            case 409: .conflict
            default: .engine
            }
        return CorralError(code, "engine: \(message) (HTTP \(status) on \(method) \(path))")
    }
}
