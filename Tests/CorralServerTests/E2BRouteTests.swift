import CorralCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import TestSupport
import Testing

@testable import CorralHost
@testable import CorralServer

@Suite("E2B's routes: API keys, tenant isolation, access tokens", .engine, .timeLimit(.minutes(10)))
struct E2BRouteTests {
    @Test("a key that is no tenant token, or none, is E2B's 401 in E2B's shape; an unknown template its 404")
    func keysAndTemplates() async throws {
        try await ServerFixture.with { fixture in
            try await Application(router: fixture.server.listenerRouter(auth: .tokens)).test(.router) { client in
                for key in [nil, "corral_not-a-token"] {
                    let response = try await client.e2b(
                        .post, "/v2/sandboxes", key: key, json: #"{"templateID":"base"}"#)
                    #expect(response.status == .unauthorized)
                    let body = try JSONDecoder().decode(JSONValue.self, from: Data(buffer: response.body))
                    #expect(body["code"] == .int(401))
                }
                let unknown = try await client.e2b(
                    .post, "/v2/sandboxes", key: fixture.tokenA, json: #"{"templateID":"no-such"}"#)
                #expect(unknown.status == .notFound)
                #expect(String(buffer: unknown.body).contains("template 'no-such' not found"))
                // The sandbox ports' catch-all leaves other unknown paths corral's 404.
                for path in ["/", "/no-such-route", "/v1/no-such-route"] {
                    let missing = try await client.execute(uri: path, method: .get)
                    #expect(missing.status == .notFound, "\(path)")
                    #expect(missing.error?.code == "not_found", "\(path)")
                }
            }
        }
    }

    @Test("another tenant's sandbox is E2B's 404 everywhere; the data plane wants the sandbox's own access token")
    func isolation() async throws {
        try await ServerFixture.with { fixture in
            try await Application(router: fixture.server.listenerRouter(auth: .tokens)).test(.router) { client in
                let created = try await client.e2b(
                    .post, "/v2/sandboxes", key: fixture.tokenA, json: #"{"templateID":"base","metadata":{"k":"v"}}"#)
                #expect(created.status == .created)
                let body = try JSONDecoder().decode(JSONValue.self, from: Data(buffer: created.body))
                let id = try #require(body["sandboxID"]?.stringValue)
                let accessToken = try #require(body["envdAccessToken"]?.stringValue)
                #expect(body["envdVersion"] == .string(E2BControlPlane.envdVersion))

                for (method, path, json) in [
                    (HTTPRequest.Method.get, "/sandboxes/\(id)", nil),
                    (.delete, "/sandboxes/\(id)", nil),
                    (.post, "/sandboxes/\(id)/timeout", #"{"timeout":1}"#),
                    (.post, "/v2/sandboxes/\(id)/connect", #"{"timeout":10}"#),
                ] {
                    let response = try await client.e2b(method, path, key: fixture.tokenB, json: json)
                    #expect(response.status == .notFound, "\(method) \(path)")
                }
                let listed = try await client.e2b(.get, "/v2/sandboxes", key: fixture.tokenB)
                #expect(!String(buffer: listed.body).contains(id))
                let own = try await client.e2b(.get, "/v2/sandboxes?metadata=k%3Dv", key: fixture.tokenA)
                #expect(String(buffer: own.body).contains(id))

                let stat = #"{"path":"/workspace"}"#
                for token in [nil, fixture.tokenA, String(repeating: "0", count: accessToken.count)] {
                    let refused = try await client.envd(
                        "/filesystem.Filesystem/Stat", sandbox: id, token: token, json: stat)
                    #expect(refused.status == .unauthorized)
                }
                let allowed = try await client.envd(
                    "/filesystem.Filesystem/Stat", sandbox: id, token: accessToken, json: stat)
                #expect(allowed.status == .ok)
                #expect(String(buffer: allowed.body).contains("FILE_TYPE_DIRECTORY"))

                let gone = try await client.envd("/health", sandbox: "sb-000000000000", token: nil, method: .get)
                #expect(gone.status == .badGateway)
                #expect(String(buffer: gone.body).contains("was not found"))

                let killed = try await client.e2b(.delete, "/sandboxes/\(id)", key: fixture.tokenA)
                #expect(killed.status == .noContent)
            }
        }
    }
}

extension TestClientProtocol {
    /// A control-plane request with an E2B API key.
    func e2b(_ method: HTTPRequest.Method, _ uri: String, key: String?, json: String? = nil) async throws
        -> TestResponse
    {
        var headers = HTTPFields()
        if let key, let name = HTTPField.Name("X-API-Key") { headers[name] = key }
        var buffer: ByteBuffer?
        if let json {
            headers[.contentType] = "application/json"
            buffer = ByteBuffer(string: json)
        }
        return try await execute(uri: uri, method: method, headers: headers, body: buffer)
    }

    /// A data-plane request for one sandbox, as the SDK sends it.
    func envd(
        _ uri: String, sandbox: String, token: String?, json: String = "{}", method: HTTPRequest.Method = .post
    ) async throws -> TestResponse {
        var headers = HTTPFields()
        if let name = HTTPField.Name("E2b-Sandbox-Id") { headers[name] = sandbox }
        if let name = HTTPField.Name("E2b-Sandbox-Port") { headers[name] = "49983" }
        if let token, let name = HTTPField.Name("X-Access-Token") { headers[name] = token }
        headers[.contentType] = "application/json"
        return try await execute(
            uri: uri, method: method, headers: headers, body: method == .get ? nil : ByteBuffer(string: json))
    }
}
