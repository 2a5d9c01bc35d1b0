import CorralAPI
import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import Hummingbird
import HummingbirdTesting
import TarArchive
import TestSupport
import Testing

@Suite("Sandbox routes on a real engine", .engine)
struct SandboxRouteTests {
    static let create =
        #"{"image": "\#(TestEnvironment.baseImage)", "memory": "256m", "ttl": "15m", "labels": {"test": "server"}}"#

    @Test("create, list, inspect, execute, exec stream, files and delete work for the owner")
    func lifecycle() async throws {
        try await ServerFixture.with { fixture in
            let token = fixture.tokenA
            try await fixture.test { client in
                let created = try await client.call(.post, "/v1/sandboxes", token: token, json: Self.create)
                #expect(created.status == .created, "\(created.text)")
                let id = try created.decode(CreatedSandbox.self).id

                let listed = try await client.call(.get, "/v1/sandboxes", token: token)
                #expect(try listed.decode([SandboxInfo].self).map(\.id) == [id])
                let info = try await client.call(.get, "/v1/sandboxes/\(id)", token: token).decode(SandboxInfo.self)
                #expect(info.labels["test"] == "server")
                #expect(info.tenant.rawValue == "tenant-a")

                let executed = try await client.call(
                    .post, "/v1/sandboxes/\(id)/execute", token: token,
                    json: #"{"name": "bash", "input": {"command": "echo hi; exit 3"}}"#)
                let output = try executed.decode(ToolOutput.self)
                #expect(output.isError)
                #expect(output.text.hasPrefix("hi\n"))

                let streamed = try await client.call(
                    .post, "/v1/sandboxes/\(id)/exec", token: token,
                    json: #"{"command": ["bash", "-c", "echo out; echo err >&2; exit 5"], "timeout": "30s"}"#)
                let events = try streamed.text.split(separator: "\n").map {
                    try JSONDecoder().decode(ExecStreamEvent.self, from: Data($0.utf8))
                }
                #expect(events.last?.status?.exitCode == 5)
                let stdout = events.filter { $0.stream == "stdout" }.flatMap(\.bytes)
                #expect(String(decoding: stdout, as: UTF8.self) == "out\n")

                let put = try await client.call(
                    .put, "/v1/sandboxes/\(id)/files?path=/workspace/a.txt", token: token, body: Array("data".utf8))
                #expect(put.status == .noContent)
                let got = try await client.call(.get, "/v1/sandboxes/\(id)/files?path=/workspace/a.txt", token: token)
                #expect(got.text == "data")

                let writer = try TarWriter()
                try writer.addFile(path: "dir/b.txt", contents: Array("tarred".utf8))
                let tar = try writer.finish()
                let archived = try await client.call(
                    .put, "/v1/sandboxes/\(id)/archive?path=/workspace", token: token, body: tar)
                #expect(archived.status == .noContent, "\(archived.text)")
                let stat = try await client.call(.get, "/v1/sandboxes/\(id)/stat?path=/workspace/dir", token: token)
                #expect(try stat.decode(PathStat.self).isDirectory)
                let back = try await client.call(.get, "/v1/sandboxes/\(id)/archive?path=/workspace/dir", token: token)
                let reader = try TarReader(bytes: Array(buffer: back.body))
                var names: [String] = []
                while let entry = try reader.nextEntry() { names.append(entry.path) }
                #expect(names.contains { $0.hasSuffix("dir/b.txt") })

                // What fails before the first byte is an error status with a JSON body, never a
                // 200 whose stream breaks: the root, a special file, a file its user cannot read.
                let locked = try await client.call(
                    .post, "/v1/sandboxes/\(id)/exec", token: token,
                    json: #"{"command": ["sh", "-c", "echo x > /workspace/locked && chmod 000 /workspace/locked"]}"#)
                #expect(locked.status == .ok, "\(locked.text)")
                for (path, status) in [("/", 400), ("/dev/null", 400), ("/workspace/locked", 403)] {
                    let refused = try await client.call(.get, "/v1/sandboxes/\(id)/archive?path=\(path)", token: token)
                    #expect(refused.status.code == status, "\(path): \(refused.status) \(refused.text)")
                    #expect(refused.headers[.contentType]?.hasPrefix("application/json") == true, "\(path)")
                }

                let evil = try TarWriter()
                try evil.addFile(path: "../escape", contents: [1])
                let refused = try await client.call(
                    .put, "/v1/sandboxes/\(id)/archive?path=/workspace", token: token, body: try evil.finish())
                #expect(refused.status.code >= 400 && refused.status.code < 500, "\(refused.text)")

                let deleted = try await client.call(.delete, "/v1/sandboxes/\(id)", token: token)
                #expect(deleted.status == .noContent)
                let gone = try await client.call(.get, "/v1/sandboxes/\(id)", token: token)
                #expect(gone.status == .notFound)
            }
        }
    }

    @Test("another tenant's sandbox is the same 404 as a missing one, on every route")
    func crossTenant() async throws {
        try await ServerFixture.with { fixture in
            try await fixture.test { client in
                let created = try await client.call(.post, "/v1/sandboxes", token: fixture.tokenA, json: Self.create)
                let id = try created.decode(CreatedSandbox.self).id
                let missing = SandboxID.random()
                let routes: [(HTTPRequest.Method, String, String?)] = [
                    (.get, "/v1/sandboxes/ID", nil), (.delete, "/v1/sandboxes/ID", nil),
                    (.post, "/v1/sandboxes/ID/execute", #"{"name": "bash", "input": {"command": "true"}}"#),
                    (.post, "/v1/sandboxes/ID/exec", #"{"command": ["true"]}"#),
                    (.get, "/v1/sandboxes/ID/files?path=/etc/hostname", nil),
                    (.put, "/v1/sandboxes/ID/files?path=/workspace/x", nil),
                    (.get, "/v1/sandboxes/ID/archive?path=/workspace", nil),
                    (.put, "/v1/sandboxes/ID/archive?path=/workspace", nil),
                    (.get, "/v1/sandboxes/ID/stat?path=/workspace", nil),
                ]
                for (method, template, json) in routes {
                    let theirs = try await client.call(
                        method, template.replacingOccurrences(of: "ID", with: id.rawValue), token: fixture.tokenB,
                        json: json,
                        body: json == nil ? [0] : nil)
                    let absent = try await client.call(
                        method, template.replacingOccurrences(of: "ID", with: missing.rawValue), token: fixture.tokenB,
                        json: json,
                        body: json == nil ? [0] : nil)
                    #expect(theirs.status == .notFound, "\(method) \(template): \(theirs.text)")
                    #expect(theirs.status == absent.status)
                    #expect(
                        theirs.text.replacingOccurrences(of: id.rawValue, with: "ID")
                            == absent.text.replacingOccurrences(of: missing.rawValue, with: "ID"))
                }
                let theirList = try await client.call(.get, "/v1/sandboxes", token: fixture.tokenB)
                #expect(try theirList.decode([SandboxInfo].self).isEmpty)
                // Still there for its owner.
                let mine = try await client.call(.get, "/v1/sandboxes/\(id)", token: fixture.tokenA)
                #expect(mine.status == .ok)
            }
        }
    }

    @Test("a tenant's sandbox quota holds, also under concurrent creates")
    func quota() async throws {
        try await ServerFixture.with(sandboxesPerTenant: 2) { fixture in
            try await fixture.test { client in
                let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                    for _ in 0..<4 {
                        group.addTask {
                            Int(
                                try await client.call(.post, "/v1/sandboxes", token: fixture.tokenA, json: Self.create)
                                    .status.code)
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                #expect(statuses.filter { $0 == 201 }.count == 2)
                #expect(statuses.filter { $0 == 429 }.count == 2)
                let other = try await client.call(.post, "/v1/sandboxes", token: fixture.tokenB, json: Self.create)
                #expect(other.status == .created, "another tenant's quota is its own")
            }
            // The operator on the unix socket is not held to tenants' quotas.
            try await Application(router: fixture.server.router(auth: .local)).test(.router) { client in
                for _ in 0..<3 {
                    let made = try await client.call(.post, "/v1/sandboxes", token: nil, json: Self.create)
                    #expect(made.status == .created, "\(made.text)")
                }
            }
        }
    }
}
