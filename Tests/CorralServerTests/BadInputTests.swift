import CorralAPI
import CorralCore
import Foundation
import Hummingbird
import HummingbirdTesting
import TestSupport
import Testing

@Suite("The API refuses bad requests with a 4xx and a JSON {code, message}", .engine)
struct BadInputTests {
    @Test("a missing or invalid token is 401 on every /v1 route")
    func authentication() async throws {
        try await ServerFixture.with { fixture in
            try await fixture.test { client in
                for (method, uri) in [
                    (HTTPRequest.Method.get, "/v1/sandboxes"), (.post, "/v1/sandboxes"),
                    (.get, "/v1/sandboxes/sb-x/stat?path=/"),
                    (.get, "/v1/pools"), (.delete, "/v1/sandboxes/sb-x"),
                ] {
                    let missing = try await client.call(method, uri, token: nil)
                    #expect(missing.status == .unauthorized, "\(method) \(uri)")
                    #expect(missing.error?.code == "unauthenticated")
                    let invalid = try await client.call(method, uri, token: "corral_not-a-real-token")
                    #expect(invalid.status == .unauthorized)
                }
                let health = try await client.call(.get, "/v1/health", token: nil)
                #expect(health.status == .ok)
            }
        }
    }

    @Test("malformed JSON, wrong types and unknown routes are 4xx with a message")
    func malformed() async throws {
        try await ServerFixture.with { fixture in
            let token = fixture.tokenA
            try await fixture.test { client in
                let cases: [(String?, String, String)] = [
                    ("{bad", "invalid_argument", "not valid JSON"),
                    (#"{"cpus": "lots"}"#, "invalid_argument", "'cpus' should be a number"),
                    (#"{"memory": "huge"}"#, "invalid_argument", "invalid size 'huge'"),
                    (#"{"ttl": "soon"}"#, "invalid_argument", "invalid duration 'soon'"),
                    (#"{"labels": ["a"]}"#, "invalid_argument", "'labels' should be an object"),
                    (#"{"template": "base", "image": "x"}"#, "invalid_argument", "cannot be combined with a template"),
                    (#"{"session": "../x"}"#, "invalid_argument", "invalid session id"),
                    ("[]", "invalid_argument", "should be an object"),
                    (nil, "invalid_argument", "has no body"),
                ]
                for (json, code, message) in cases {
                    let response = try await client.call(.post, "/v1/sandboxes", token: token, json: json)
                    #expect(response.status == .badRequest, "\(json ?? "no body"): \(response.text)")
                    #expect(response.error?.code == code)
                    #expect(response.error?.message.contains(message) == true, "\(json ?? "no body"): \(response.text)")
                }
                let unknown = try await client.call(.get, "/v1/nothing-here", token: token)
                #expect(unknown.status == .notFound)
                #expect(unknown.error?.code == "not_found")
                let badID = try await client.call(.get, "/v1/sandboxes/..%2Fetc", token: token)
                #expect(badID.status == .badRequest)
                let noPath = try await client.call(.get, "/v1/sandboxes/sb-x/stat", token: token)
                #expect(noPath.status == .badRequest)
                #expect(noPath.error?.message.contains("'path'") == true)
            }
        }
    }

    @Test("an oversize body is 413, at the documented 1 MiB for JSON")
    func oversize() async throws {
        try await ServerFixture.with { fixture in
            let big = #"{"labels": {"x": ""# + String(repeating: "a", count: 1 << 20) + #""}}"#
            try await fixture.test { client in
                let response = try await client.call(.post, "/v1/sandboxes", token: fixture.tokenA, json: big)
                #expect(response.status == .contentTooLarge)
                #expect(response.error?.code == "payload_too_large")
            }
        }
    }
}
