import CorralAPI
import CorralCore
import CorralServer
import CorralSession
import CurlHTTP
import Foundation
import Hummingbird
import HummingbirdTesting
import TestSupport
import Testing

@Suite("Session routes", .engine)
struct SessionRouteTests {
    @Test("create, append with expectedSeq and idempotent retries, read slices, fork, wake")
    func sessions() async throws {
        try await ServerFixture.with { fixture in
            let token = fixture.tokenA
            try await fixture.test { client in
                let created = try await client.call(
                    .post, "/v1/sessions", token: token, json: #"{"metadata": {"task": "demo"}}"#)
                #expect(created.status == .created)
                let session = try created.decode(SessionInfo.self)
                #expect(session.tenant.rawValue == "tenant-a")
                let id = session.id

                let append =
                    #"{"events": [{"id": "e1", "type": "user.message", "data": {"text": "hi"}}, {"id": "e2", "type": "brain.response"}], "expectedSeq": 1}"#
                let first = try await client.call(.post, "/v1/sessions/\(id)/events", token: token, json: append)
                #expect(first.status == .created)
                #expect(try first.decode(AppendEventsResponse.self).written == 2)
                let retry = try await client.call(.post, "/v1/sessions/\(id)/events", token: token, json: append)
                #expect(retry.status == .ok)
                #expect(try retry.decode(AppendEventsResponse.self).written == 0)
                let wrongSeq = try await client.call(
                    .post, "/v1/sessions/\(id)/events", token: token,
                    json: #"{"events": [{"type": "x"}], "expectedSeq": 1}"#)
                #expect(wrongSeq.status == .conflict)
                let badEvent = try await client.call(
                    .post, "/v1/sessions/\(id)/events", token: token,
                    json: #"{"events": [{"type": "x", "id": "has space"}]}"#)
                #expect(badEvent.status == .badRequest)

                let page = try await client.call(.get, "/v1/sessions/\(id)/events?from=2&limit=5", token: token)
                let events = try page.decode(EventPageResponse.self)
                #expect(events.events.map(\.type) == ["brain.response"])
                #expect(events.head == 2)

                let fork = try await client.call(.post, "/v1/sessions/\(id)/fork", token: token, json: #"{"at": 1}"#)
                #expect(fork.status == .created)
                let forked = try fork.decode(SessionInfo.self)
                #expect(forked.head == 1)

                let woke = try await client.call(.post, "/v1/sessions/\(id)/wake", token: token)
                let lease = try woke.decode(Lease.self)
                #expect(lease.epoch == 2)
                let stale = try await client.call(
                    .post, "/v1/sessions/\(id)/events", token: token,
                    json: #"{"events": [{"type": "late"}], "epoch": 1}"#)
                #expect(stale.status == .conflict)
                #expect(
                    stale.error?.message.contains("stale") == true || stale.error?.message.contains("lease") == true,
                    "\(stale.text)")

                let chosen = try await client.call(.post, "/v1/sessions", token: token, json: #"{"id": "\#(id)"}"#)
                #expect(chosen.status == .badRequest)
                let times = try await client.call(.get, "/v1/sessions/\(id)/events", token: token).text
                #expect(
                    times.range(of: #"\.\d{3}"#, options: .regularExpression) != nil,
                    "event times keep sub-second precision: \(times)")

                let mine = try await client.call(.get, "/v1/sessions", token: token).decode([SessionInfo].self)
                #expect(Set(mine.map(\.id)) == [id, forked.id])
            }
        }
    }

    @Test("another tenant's session is the same 404 as a missing one, on every route")
    func crossTenant() async throws {
        try await ServerFixture.with { fixture in
            try await fixture.test { client in
                let id = try await client.call(.post, "/v1/sessions", token: fixture.tokenA).decode(SessionInfo.self).id
                let missing = SessionID.random()
                let routes: [(HTTPRequest.Method, String, String?)] = [
                    (.get, "/v1/sessions/ID", nil), (.post, "/v1/sessions/ID/events", #"{"events": [{"type": "x"}]}"#),
                    (.get, "/v1/sessions/ID/events", nil), (.get, "/v1/sessions/ID/events/stream", nil),
                    (.post, "/v1/sessions/ID/fork", #"{"at": 0}"#), (.post, "/v1/sessions/ID/wake", nil),
                ]
                for (method, template, json) in routes {
                    let theirs = try await client.call(
                        method, template.replacingOccurrences(of: "ID", with: id.rawValue), token: fixture.tokenB,
                        json: json)
                    let absent = try await client.call(
                        method, template.replacingOccurrences(of: "ID", with: missing.rawValue), token: fixture.tokenB,
                        json: json)
                    #expect(theirs.status == .notFound, "\(method) \(template): \(theirs.text)")
                    #expect(
                        theirs.text.replacingOccurrences(of: id.rawValue, with: "ID")
                            == absent.text.replacingOccurrences(of: missing.rawValue, with: "ID"))
                }
                #expect(
                    try await client.call(.get, "/v1/sessions", token: fixture.tokenB).decode([SessionInfo].self)
                        .isEmpty)
            }
        }
    }

    // Security review finding 11: creating or forking a session with another tenant's id
    // answered 409, which told the caller that the id exists.
    @Test("a network tenant cannot choose a session id: create and fork answer the same 400 whether or not it is taken")
    func chosenIDs() async throws {
        try await ServerFixture.with { fixture in
            try await fixture.test { client in
                let theirs = try await client.call(.post, "/v1/sessions", token: fixture.tokenA).decode(
                    SessionInfo.self
                ).id
                let mine = try await client.call(.post, "/v1/sessions", token: fixture.tokenB).decode(SessionInfo.self)
                    .id
                let unused = "never-used-\(UUID().uuidString.prefix(8).lowercased())"
                var answers: [String] = []
                for candidate in [theirs.rawValue, unused, "not a valid id"] {
                    let created = try await client.call(
                        .post, "/v1/sessions", token: fixture.tokenB, json: #"{"id": "\#(candidate)"}"#)
                    let forked = try await client.call(
                        .post, "/v1/sessions/\(mine)/fork", token: fixture.tokenB,
                        json: #"{"at": 0, "id": "\#(candidate)"}"#)
                    for response in [created, forked] {
                        #expect(response.status == .badRequest, "\(candidate): \(response.text)")
                        #expect(response.error?.hint?.contains("service picks") == true)
                        #expect(!response.text.contains(candidate), "the answer names the id: \(response.text)")
                        answers.append(response.text)
                    }
                }
                #expect(Set(answers).count == 1, "the answers differ: \(Set(answers))")
                let listed = try await client.call(.get, "/v1/sessions", token: fixture.tokenB).decode(
                    [SessionInfo].self)
                #expect(listed.map(\.id) == [mine], "nothing was made")
            }
            // The local tenant, the operator, chooses ids as before: it sees every session anyway.
            try await Application(router: fixture.server.router(auth: .local)).test(.router) { client in
                let created = try await client.call(
                    .post, "/v1/sessions", token: nil, json: #"{"id": "operator-named"}"#)
                #expect(created.status == .created)
                let again = try await client.call(.post, "/v1/sessions", token: nil, json: #"{"id": "operator-named"}"#)
                #expect(again.status == .conflict)
                #expect(
                    !again.text.contains(fixture.state.path), "errors never show the service's paths: \(again.text)")
                let forked = try await client.call(
                    .post, "/v1/sessions/operator-named/fork", token: nil, json: #"{"at": 0, "id": "operator-fork"}"#)
                #expect(forked.status == .created)
            }
        }
    }

    @Test("the SSE tail sees appends live")
    func liveTail() async throws {
        try await ServerFixture.with { fixture in
            let app = Application(
                router: fixture.server.router(auth: .tokens),
                configuration: .init(address: .hostname("127.0.0.1", port: 0))
            )
            try await app.test(.live) { client in
                let port = try #require(client.port)
                let created = try await client.call(.post, "/v1/sessions", token: fixture.tokenA)
                let id = try created.decode(SessionInfo.self).id
                _ = try await client.call(
                    .post, "/v1/sessions/\(id)/events", token: fixture.tokenA,
                    json: #"{"events": [{"type": "before"}]}"#)
                let http = try CurlHTTPClient(endpoint: HTTPEndpoint(parsing: "http://127.0.0.1:\(port)"))
                defer { http.shutdown() }
                let seen = try await http.withStreamingResponse(
                    CurlHTTP.HTTPRequest(
                        .get, "/v1/sessions/\(id)/events/stream", headers: ["Authorization": "Bearer \(fixture.tokenA)"]
                    )
                ) { head, body in
                    #expect(head.status == 200)
                    #expect(head.headers["content-type"] == "text/event-stream")
                    var text = ""
                    var appended = false
                    for try await chunk in body {
                        text += String(decoding: chunk, as: UTF8.self)
                        if !appended && text.contains("event: before") {
                            // Appended after the tail is open: it must arrive on the open stream.
                            appended = true
                            _ = try await client.call(
                                .post, "/v1/sessions/\(id)/events", token: fixture.tokenA,
                                json: #"{"events": [{"type": "after"}]}"#)
                        }
                        if text.contains("event: after") { break }
                    }
                    return text
                }
                #expect(seen.contains("id: 1\nevent: before\ndata: {"))
                #expect(seen.contains("id: 2\nevent: after\ndata: {"))
            }
        }
    }

    @Test("a tenant's session quota holds")
    func quota() async throws {
        try await ServerFixture.with { fixture in
            var configuration = fixture.server.configuration
            configuration.sessionsPerTenant = 2
            let server = CorralServer(
                configuration: configuration, runner: fixture.server.runner, tenants: fixture.server.tenants,
                sessions: fixture.server.sessions)
            try await Application(router: server.router(auth: .tokens)).test(.router) { client in
                #expect(try await client.call(.post, "/v1/sessions", token: fixture.tokenA).status == .created)
                #expect(try await client.call(.post, "/v1/sessions", token: fixture.tokenA).status == .created)
                let third = try await client.call(.post, "/v1/sessions", token: fixture.tokenA)
                #expect(third.status == .tooManyRequests)
                #expect(third.error?.code == "quota_exceeded")
                #expect(try await client.call(.post, "/v1/sessions", token: fixture.tokenB).status == .created)
            }
        }
    }
}
