import CorralCore
import CurlHTTP
import DockerEngine
import Foundation
import Synchronization
import TestSupport
import Testing

@Suite("API version negotiation and engine errors, against a stub engine")
struct NegotiationTests {
    /// A stub engine that speaks `maximum` (with `minimum`), and records the paths it saw.
    func withStubEngine<T>(
        maximum: String, minimum: String?, _ body: (DockerEngineClient, StubHTTPServer) async throws -> T
    ) async throws -> T {
        let path = "/tmp/corral-stubengine-\(UUID().uuidString.prefix(6)).sock"
        let halfRemoved = Mutex(false)
        let raceFailure =
            #"{"message":"unable to remove filesystem for 6cbd: unlinkat /var/lib/docker/containers/6cbd: directory not empty"}"#
        let server = try StubHTTPServer(unixSocket: path) { request, connection in
            switch request.target {
            case let target where request.method == "DELETE" && target.contains("/containers/racing?"):
                // The engine's removal race once: the container is left dead, and is then removed.
                let first = halfRemoved.withLock { done in
                    defer { done = true }
                    return !done
                }
                if first {
                    connection.respond(status: 500, json: raceFailure)
                } else {
                    connection.respond(status: 204, body: [])
                }
            case let target where request.method == "DELETE" && target.contains("/containers/stuck?"):
                connection.respond(status: 500, json: raceFailure)
            case "/_ping":
                connection.respond(status: 200, headers: ["Api-Version": maximum], body: Array("OK".utf8))
            case "/version":
                let min = minimum.map { #","MinAPIVersion":"\#($0)""# } ?? ""
                connection.respond(status: 200, json: #"{"Version":"stub","ApiVersion":"\#(maximum)"\#(min)}"#)
            case let target where target.hasSuffix("/containers/missing/json"):
                connection.respond(status: 404, json: #"{"message":"No such container: missing"}"#)
            case let target where target.contains("/containers/json"):
                connection.respond(status: 200, json: "[]")
            case let target where target.contains("/images/create"):
                connection.respond(
                    status: 200,
                    json:
                        #"{"errorDetail":{"message":"archive/tar: invalid tar header"},"error":"archive/tar: invalid tar header"}"#
                )
            default:
                connection.respond(status: 500, body: Array("plain text failure".utf8))
            }
            return true
        }
        let client = try DockerEngineClient(parsing: "unix://\(path)")
        defer {
            client.shutdown()
            server.stop()
        }
        return try await body(client, server)
    }

    @Test("a Docker 20.10 engine is spoken to at API 1.41")
    func oldEngine() async throws {
        try await withStubEngine(maximum: "1.41", minimum: "1.12") { client, server in
            #expect(try await client.apiVersion() == APIVersion(1, 41))
            _ = try await client.listContainers()
            #expect(server.requests.last?.target.hasPrefix("/v1.41/containers/json") == true)
        }
    }

    @Test("a current engine is asked for corral's newest API, within its range")
    func newEngine() async throws {
        try await withStubEngine(maximum: "1.52", minimum: "1.44") { client, server in
            #expect(try await client.apiVersion() == APIVersion.newestSupported)
            _ = try await client.listContainers()
            #expect(server.requests.last?.target.hasPrefix("/v\(APIVersion.newestSupported)/") == true)
        }
    }

    @Test("versions order numerically, not as text")
    func ordering() throws {
        #expect(try #require(APIVersion("1.9")) < APIVersion(1, 41))
        #expect(APIVersion("1.x") == nil)
    }

    @Test("engine errors carry the HTTP status and the engine's own message")
    func engineErrors() async throws {
        try await withStubEngine(maximum: "1.41", minimum: nil) { client, _ in
            do {
                _ = try await client.inspectContainer("missing")
                Issue.record("expected an error")
            } catch let error as DockerEngineError {
                #expect(error.status == 404)
                #expect(error.message == "No such container: missing")
                #expect(error.isNotFound)
            }
            do {
                try await client.startContainer("other")
                Issue.record("expected an error")
            } catch let error as DockerEngineError {
                #expect(error.status == 500)
                #expect(error.message == "plain text failure")
            }
        }
    }

    @Test("an import failure reported inside a 200 stream is still an error")
    func importErrorInStream() async throws {
        try await withStubEngine(maximum: "1.41", minimum: nil) { client, _ in
            do {
                try await client.importImage(rootfs: .bytes([1, 2, 3]), repository: "x/y", tag: "z")
                Issue.record("expected an error")
            } catch let error as CorralError {
                #expect(error.message.contains("invalid tar header"))
            }
        }
    }

    @Test("a removal the engine failed half-way (directory not empty) is tried again; one that keeps failing says so")
    func removalRaceIsRetried() async throws {
        try await withStubEngine(maximum: "1.41", minimum: nil) { client, server in
            #expect(try await client.removeContainer("racing"))
            #expect(server.requests.filter { $0.target.contains("/containers/racing?") }.count == 2)
            do {
                try await client.removeContainer("stuck")
                Issue.record("expected an error")
            } catch let error as DockerEngineError {
                #expect(error.isFilesystemRemovalRace)
                #expect(error.message.contains("directory not empty"))
            }
            #expect(server.requests.filter { $0.target.contains("/containers/stuck?") }.count == 4)
        }
    }

    @Test("ids with path characters cannot change the endpoint called")
    func pathSegmentsAreEncoded() async throws {
        try await withStubEngine(maximum: "1.41", minimum: nil) { client, server in
            _ = try? await client.inspectContainer("../../images/x")
            #expect(server.requests.last?.target == "/v1.41/containers/..%2F..%2Fimages%2Fx/json")
        }
    }
}
