import CorralCore
import CurlHTTP
import Foundation

extension DockerEngineClient {
    /// `POST /containers/create`; returns the new container's id.
    public func createContainer(name: String?, _ request: ContainerCreateRequest) async throws -> String {
        let response = try await call(.post, "/containers/create", query: [("name", name)], json: request)
        return try decode(ContainerCreateResponse.self, from: response, path: "/containers/create").id
    }

    /// `POST /containers/{id}/start`; starting a running container is not an error.
    public func startContainer(_ id: String) async throws {
        try await call(.post, "/containers/\(Self.segment(id))/start", accept: [304])
    }

    public func inspectContainer(_ id: String) async throws -> ContainerInspect {
        try await get(ContainerInspect.self, "/containers/\(Self.segment(id))/json")
    }

    /// `POST /containers/{id}/wait`: blocks until the container reaches `condition`
    /// (`not-running`, `next-exit` or `removed`).
    public func waitContainer(_ id: String, condition: String = "not-running") async throws -> ContainerWaitResponse {
        let path = try await self.path("/containers/\(Self.segment(id))/wait", query: [("condition", condition)])
        let response = try await send(HTTPRequest(.post, path))
        guard response.status == 200 else {
            throw engineError(response, method: "POST", path: "/containers/\(id)/wait")
        }
        return try decode(ContainerWaitResponse.self, from: response, path: "/containers/\(id)/wait")
    }

    public func killContainer(_ id: String, signal: String = "SIGKILL") async throws {
        try await call(.post, "/containers/\(Self.segment(id))/kill", query: [("signal", signal)])
    }

    /// `POST /containers/{id}/stop`; stopping a stopped container is not an error.
    public func stopContainer(_ id: String, timeoutSeconds: Int? = nil) async throws {
        try await call(
            .post, "/containers/\(Self.segment(id))/stop", query: [("t", timeoutSeconds.map(String.init))],
            accept: [304])
    }

    /// `DELETE /containers/{id}` with its anonymous volumes. Returns false when it was not there.
    ///
    /// The engine sometimes fails a removal with "unable to remove filesystem … directory not
    /// empty": it lists the container's directory while its own exit handling still writes a
    /// file there (moby/moby#52161). The container is left dead, and a second `DELETE`
    /// removes it, so that failure is tried again, a few times, before it is reported.
    @discardableResult
    public func removeContainer(_ id: String, force: Bool = true, volumes: Bool = true) async throws -> Bool {
        var attempt = 0
        while true {
            attempt += 1
            do {
                let response = try await call(
                    .delete, "/containers/\(Self.segment(id))", query: [("force", "\(force)"), ("v", "\(volumes)")],
                    accept: [404])
                // A 404 after a half-done removal means that removal finished it.
                return response.status != 404 || attempt > 1
            } catch let error as DockerEngineError
                where error.isFilesystemRemovalRace && attempt < Self.removalAttempts
            {
                try await Task.sleep(for: .milliseconds(50 * attempt))
            }
        }
    }

    /// How many times `removeContainer` tries a removal the engine failed half-way.
    static let removalAttempts = 4

    /// `POST /containers/{id}/rename`. The engine makes this a compare-and-swap on the name:
    /// when another caller took `newName` first, this throws a 409 (or 404 when the source
    /// name is gone).
    public func renameContainer(_ id: String, to newName: String) async throws {
        try await call(.post, "/containers/\(Self.segment(id))/rename", query: [("name", newName)])
    }

    /// `GET /containers/json`, filtered by labels (`key` or `key=value`).
    public func listContainers(all: Bool = true, labels: [String] = [], names: [String] = []) async throws
        -> [ContainerSummary]
    {
        var filters: [String: [String]] = [:]
        if !labels.isEmpty { filters["label"] = labels }
        if !names.isEmpty { filters["name"] = names }
        return try await get(
            [ContainerSummary].self, "/containers/json", query: [("all", "\(all)"), ("filters", Self.filters(filters))])
    }

    /// `GET /containers/{id}/export`: the container's whole filesystem as a tar stream.
    public func withContainerExport<T: Sendable>(
        _ id: String, _ body: (HTTPResponseBody) async throws -> T
    ) async throws -> T {
        let path = try await self.path("/containers/\(Self.segment(id))/export")
        return try await streaming(HTTPRequest(.get, path), describedAs: "/containers/\(id)/export") { _, stream in
            try await body(stream)
        }
    }

    /// Sends a streaming request and checks its status before handing over the body.
    func streaming<T: Sendable>(
        _ request: HTTPRequest, describedAs path: String,
        _ body: (HTTPResponseHead, HTTPResponseBody) async throws -> T
    ) async throws -> T {
        do {
            return try await http.withStreamingResponse(request) { head, stream in
                guard (200..<300).contains(head.status) else {
                    let data = try await stream.collect(upTo: 1 << 20)
                    throw engineError(HTTPResponse(head: head, body: data), method: request.method.rawValue, path: path)
                }
                return try await body(head, stream)
            }
        } catch let error as CorralError where error.code == .unavailable {
            throw unreachable(error)
        }
    }
}
