import CorralCore
import CurlHTTP
import Foundation

extension DockerEngineClient {
    /// `PUT /containers/{id}/archive`: unpacks a tar stream into the container at `path`
    /// (a directory that must exist). Ownership in the tar is kept.
    public func putArchive(container: String, path: String, tar: HTTPRequestBody) async throws {
        try await call(
            .put, "/containers/\(Self.segment(container))/archive",
            query: [("path", path), ("noOverwriteDirNonDir", "true")], body: tar, contentType: "application/x-tar")
    }

    /// `HEAD /containers/{id}/archive`: what is at `path` in the container.
    public func statPath(container: String, path: String) async throws -> PathStat {
        let route = "/containers/\(Self.segment(container))/archive"
        let response = try await call(.head, route, query: [("path", path)])
        return try Self.pathStat(from: response.head, path: path)
    }

    /// `GET /containers/{id}/archive`: `path` (a file or a directory) as a tar stream.
    public func withArchive<T: Sendable>(
        container: String, path: String, _ body: (PathStat, HTTPResponseBody) async throws -> T
    ) async throws -> T {
        let route = "/containers/\(Self.segment(container))/archive"
        let full = try await self.path(route, query: [("path", path)])
        return try await streaming(HTTPRequest(.get, full), describedAs: route) { head, stream in
            try await body(try Self.pathStat(from: head, path: path), stream)
        }
    }

    static func pathStat(from head: HTTPResponseHead, path: String) throws -> PathStat {
        guard let encoded = head.headers["X-Docker-Container-Path-Stat"], let data = Data(base64Encoded: encoded) else {
            throw CorralError(.engine, "the engine sent no stat for \(path)")
        }
        do {
            return try JSONDecoder().decode(PathStat.self, from: data)
        } catch {
            throw CorralError(.engine, "the engine's stat for \(path) is malformed: \(error)")
        }
    }
}
