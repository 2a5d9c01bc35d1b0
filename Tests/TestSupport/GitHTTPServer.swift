import CorralCore
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A real git smart-HTTP server on loopback: `git http-backend` run as a CGI program behind
/// `StubHTTPServer`, with bare repositories under a directory of its own. It demands Basic
/// auth with one of its tokens (any user name) and answers 401 otherwise, as a git host does.
/// Pushes are enabled.
public final class GitHTTPServer: Sendable {
    public let root: URL
    public var port: Int { server.port ?? 0 }
    private let backend: Backend
    private let server: StubHTTPServer

    /// Serves the repositories under `root` (`OWNER/REPO.git`), accepting `tokens`.
    public init(root: URL, tokens: Set<String>) throws {
        self.root = root
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let backend = Backend(root: root, tokens: tokens)
        self.backend = backend
        server = try StubHTTPServer(loopbackHandler: { request, connection in
            backend.serve(request, connection)
            return true
        })
    }

    deinit { server.stop() }

    public func stop() { server.stop() }

    /// Makes a token stop working, as a revoked token does.
    public func revoke(_ token: String) { _ = backend.tokens.withLock { $0.remove(token) } }

    /// Every request, in order.
    public var requests: [Request] { backend.seen.withLock { $0 } }

    /// What the server saw of one request.
    public struct Request: Sendable {
        public var method: String
        public var target: String
        public var authorization: String?
        /// The `Git-Protocol` header (`version=2` for protocol v2).
        public var gitProtocol: String?
    }

    /// `http://127.0.0.1:PORT/OWNER/REPO.git`.
    public func url(owner: String, name: String) -> String { "http://127.0.0.1:\(port)/\(owner)/\(name).git" }

    /// Creates `OWNER/REPO.git` with one commit on `main` holding `files`.
    @discardableResult
    public func createRepository(owner: String, name: String, files: [String: String] = ["README.md": "hello\n"]) throws
        -> URL
    {
        let bare = root.appendingPathComponent(owner).appendingPathComponent("\(name).git")
        try FileManager.default.createDirectory(at: bare.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Git.run(["init", "--bare", "--quiet", "-b", "main", bare.path])
        let work = root.appendingPathComponent(".seed-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: work) }
        try Git.run(["init", "--quiet", "-b", "main", work.path])
        for (path, content) in files {
            let file = work.appendingPathComponent(path)
            try FileManager.default.createDirectory(
                at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(content.utf8).write(to: file)
        }
        try Git.run(["-C", work.path, "add", "-A"])
        try Git.run(["-C", work.path, "commit", "--quiet", "-m", "initial"])
        try Git.run(["-C", work.path, "push", "--quiet", bare.path, "main"])
        return bare
    }

    /// The commit a branch points at in the served repository, or nil.
    public func head(owner: String, name: String, branch: String) -> String? {
        let bare = root.appendingPathComponent(owner).appendingPathComponent("\(name).git")
        return try? Git.run(["--git-dir=\(bare.path)", "rev-parse", "--verify", "--quiet", "refs/heads/\(branch)"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// The CGI side of `GitHTTPServer`, run on the stub server's connection threads.
private final class Backend: Sendable {
    let root: URL
    let tokens: Mutex<Set<String>>
    let seen = Mutex<[GitHTTPServer.Request]>([])

    init(root: URL, tokens: Set<String>) {
        self.root = root
        self.tokens = Mutex(tokens)
    }

    func serve(_ request: StubRequest, _ connection: StubConnection) {
        let authorization = request.header("Authorization")
        seen.withLock {
            $0.append(
                GitHTTPServer.Request(
                    method: request.method, target: request.target, authorization: authorization,
                    gitProtocol: request.header("Git-Protocol")))
        }
        guard let authorization, let token = Self.basicPassword(authorization), tokens.withLock({ $0.contains(token) })
        else {
            connection.respond(
                status: 401,
                headers: ["WWW-Authenticate": "Basic realm=\"test git host\"", "Content-Type": "text/plain"],
                body: Array("authentication required\n".utf8))
            return
        }
        var path = request.target
        var query = ""
        if let mark = path.firstIndex(of: "?") {
            query = String(path[path.index(after: mark)...])
            path = String(path[..<mark])
        }
        var environment = [
            "GIT_PROJECT_ROOT": root.path, "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path, "QUERY_STRING": query,
            "REQUEST_METHOD": request.method, "REMOTE_USER": "tester", "REMOTE_ADDR": "127.0.0.1",
            "GATEWAY_INTERFACE": "CGI/1.1", "CONTENT_LENGTH": "\(request.body.count)",
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "HOME": root.path,
            "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.receivepack", "GIT_CONFIG_VALUE_0": "true",
        ]
        if let type = request.header("Content-Type") { environment["CONTENT_TYPE"] = type }
        if let encoding = request.header("Content-Encoding") { environment["HTTP_CONTENT_ENCODING"] = encoding }
        if let protocolHeader = request.header("Git-Protocol") { environment["GIT_PROTOCOL"] = protocolHeader }
        do {
            let output = try Self.runCGI(environment: environment, body: request.body)
            let (status, headers, body) = Self.parseCGI(output)
            connection.respond(status: status, headers: headers, body: body)
        } catch {
            connection.respond(status: 500, headers: ["Content-Type": "text/plain"], body: Array("\(error)\n".utf8))
        }
    }

    static func basicPassword(_ header: String) -> String? {
        guard header.hasPrefix("Basic "), let data = Data(base64Encoded: String(header.dropFirst(6))) else {
            return nil
        }
        let text = String(decoding: data, as: UTF8.self)
        guard let colon = text.firstIndex(of: ":") else { return nil }
        return String(text[text.index(after: colon)...])
    }

    private static func runCGI(environment: [String: String], body: [UInt8]) throws -> Data {
        try ChildProcess.run("/usr/bin/git", ["http-backend"], environment: environment, stdin: Data(body)).stdout
    }

    private static func parseCGI(_ output: Data) -> (Int, [String: String], [UInt8]) {
        let bytes = Array(output)
        var headerEnd = bytes.count
        var bodyStart = bytes.count
        for index in 0..<bytes.count where bytes[index] == UInt8(ascii: "\n") {
            if index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "\n") {
                (headerEnd, bodyStart) = (index, index + 2)
                break
            }
            if index + 2 < bytes.count, bytes[index + 1] == UInt8(ascii: "\r"), bytes[index + 2] == UInt8(ascii: "\n") {
                (headerEnd, bodyStart) = (index, index + 3)
                break
            }
        }
        var status = 200
        var headers: [String: String] = [:]
        for line in String(decoding: bytes[0..<headerEnd], as: UTF8.self).split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if name.lowercased() == "status" {
                status = Int(value.prefix(3)) ?? 500
            } else {
                headers[name] = value
            }
        }
        return (status, headers, Array(bytes[min(bodyStart, bytes.count)...]))
    }
}

/// Runs the host's git for fixtures, failing with its output.
public enum Git {
    public struct Failure: Error, CustomStringConvertible {
        public var arguments: [String]
        public var status: Int32
        public var output: String
        public var description: String { "git \(arguments.joined(separator: " ")) exited \(status): \(output)" }
    }

    public static let fixtureEnvironment: [String: String] = [
        "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
        "HOME": FileManager.default.temporaryDirectory.path, "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0", "GIT_AUTHOR_NAME": "Corral Test", "GIT_AUTHOR_EMAIL": "test@corral.invalid",
        "GIT_COMMITTER_NAME": "Corral Test", "GIT_COMMITTER_EMAIL": "test@corral.invalid", "LC_ALL": "C",
    ]

    /// Runs git and returns stdout; throws `Failure` on a non-zero exit.
    @discardableResult
    public static func run(_ arguments: [String], environment: [String: String] = fixtureEnvironment) throws -> String {
        let result = try runAllowingFailure(arguments, environment: environment)
        guard result.status == 0 else {
            throw Failure(arguments: arguments, status: result.status, output: result.stderr)
        }
        return result.stdout
    }

    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Runs git (blocking) and returns its status and output, whatever the status.
    public static func runAllowingFailure(_ arguments: [String], environment: [String: String] = fixtureEnvironment)
        throws -> Result
    {
        let output = try ChildProcess.run("/usr/bin/git", arguments, environment: environment)
        return Result(
            status: output.status, stdout: String(decoding: output.stdout, as: UTF8.self),
            stderr: String(decoding: output.stderr, as: UTF8.self))
    }
}
