import CorralCore
import CorralGateway
import CorralSandbox
import CorralSession
import DockerEngine
import Foundation
import TestSupport
import Testing

@testable import CorralService

@Suite("Workspace requests, template settings and gateway events")
struct WorkspaceRequestTests {
    @Test("templates take egress hosts and a default repository; mistakes name the template and key")
    func templateSettings() throws {
        let configuration = try CorralConfiguration.parse(
            """
            [[templates]]
            name = "web"
            egress = ["pypi.org", "*.pythonhosted.org", "Files.Example.com:8443"]

            [templates.workspace]
            repository = "https://github.com/acme/rocket.git"
            ref = "v1.2"
            write = true
            """)
        let web = try #require(configuration.template(named: TemplateName(unchecked: "web")))
        #expect(web.egress == ["pypi.org", "*.pythonhosted.org", "files.example.com:8443"])
        #expect(web.workspace?.repository.description == "github.com/acme/rocket")
        #expect(web.workspace?.ref == "v1.2")
        #expect(web.workspace?.write == true)
        #expect(web.workspace?.branch == nil, "each sandbox works on its own branch")

        let refusals: [(String, String)] = [
            (#"egress = ["https://pypi.org/simple"]"#, "template 'web': invalid egress host"),
            (#"egress = ["pypi.org:http"]"#, "a port must be a number"),
            ("[templates.workspace]\nref = \"main\"", "workspace has no repository"),
            ("[templates.workspace]\nrepository = \"github.com/acme\"", "expected HOST/OWNER/REPO"),
            ("[templates.workspace]\nrepository = \"github.com/a/b\"\nbranch = \"x\"", "templates.workspace.branch"),
            ("[templates.workspace]\nrepository = \"github.com/a/b\"\nref = \"-x\"", "may not start with '-'"),
            ("[templates.workspace]\nrepository = \"github.com/a/b\"\nwrite = \"yes\"", "must be true or false"),
        ]
        for (text, expected) in refusals {
            do {
                _ = try CorralConfiguration.parse("[[templates]]\nname = \"web\"\n\(text)\n", source: "c.toml")
                Issue.record("accepted: \(text)")
            } catch let error as CorralError {
                #expect(error.message.contains(expected), "\(text): \(error.message)")
                #expect(error.message.hasPrefix("c.toml: "), "\(error.message)")
            }
        }
    }

    @Test("refs and branches are checked before anything is claimed")
    func refNames() throws {
        for good in ["main", "v1.2", "feature/x-y_z", "0123abcd"] {
            _ = try SandboxWorkspace(repository: "github.com/a/b", ref: good, branch: good)
        }
        for bad in [
            "", "-rf", "a..b", "a b", "x~1", "x^", "a:b", "a?", "a*", "a[b", "a\\b", "/a", "a/", "a.lock", "@",
            "a@{1}", ".hidden", "a/.b", "a//b", "tab\there", "é",
        ] {
            #expect(throws: CorralError.self, "\(bad)") {
                _ = try SandboxWorkspace(repository: "github.com/a/b", branch: bad)
            }
        }
        #expect(throws: CorralError.self) { _ = try SandboxWorkspace(repository: "ssh://github.com/a/b") }
    }

    @Test("a request that needs the gateway, in a process without one, fails before the engine is asked")
    func noGatewayHere() async throws {
        // An engine endpoint that answers nothing: the refusal must come first.
        let engine = try DockerEngineClient(parsing: "unix:///nonexistent/corral-test.sock")
        defer { engine.shutdown() }
        let provisioner = Provisioner(
            engine: engine,
            configuration: .init(
                environment: SandboxEnvironment(
                    initBinary: "/bin/true",
                    sandboxesDirectory: FileManager.default.temporaryDirectory.appendingPathComponent(
                        "corral-nogw-\(UUID().uuidString.prefix(8))"))))
        var withRepository = ProvisionRequest()
        withRepository.workspace = try SandboxWorkspace(repository: "github.com/acme/rocket")
        var withEgress = ProvisionRequest()
        withEgress.egressHosts = ["pypi.org"]
        for (request, what) in [(withRepository, "cloning github.com/acme/rocket"), (withEgress, "egress to pypi.org")]
        {
            do {
                _ = try await provisioner.provision(request)
                Issue.record("provisioned without a gateway")
            } catch let error as CorralError {
                #expect(error.code == .unavailable)
                #expect(error.message.hasPrefix("\(what) needs the gateway"), "\(error.message)")
                #expect(error.hint?.contains("corral serve") == true)
            }
        }
        var badHost = ProvisionRequest()
        badHost.egressHosts = ["http://pypi.org"]
        await #expect(throws: CorralError.self) { _ = try await provisioner.provision(badHost) }
    }

    @Test("decisions for a sandbox of a session become gateway.decision events, under the current lease")
    func sessionEvents() async throws {
        try await withTemporaryDirectory { directory in
            let store = FileSessionStore(directory: directory)
            let session = try await store.create()
            let sink = SessionGatewayEvents(store: store, durability: .fsync)
            let sandbox = SandboxID.random()
            await sink.record(
                GatewayDecision(
                    action: .gitFetch, verdict: .allowed, target: "github.com/acme/rocket", reason: "read grant: fetch",
                    credential: "gh"),
                sandbox: sandbox, session: session.id)
            // A harness taking over the session (a new epoch) does not stop the gateway's events.
            _ = try await store.wake(session.id)
            await sink.record(
                GatewayDecision(action: .egress, verdict: .denied, target: "evil.example:443", reason: "not listed"),
                sandbox: sandbox, session: session.id)
            await sink.record(
                GatewayDecision(action: .egress, verdict: .denied, target: "x:1", reason: "no session"),
                sandbox: sandbox, session: nil)
            let events = try await store.readPage(session.id).events
            #expect(events.map(\.type) == ["gateway.decision", "gateway.decision"])
            #expect(events.map(\.epoch) == [1, 2])
            #expect(events[0].data["action"]?.stringValue == "git.fetch")
            #expect(events[0].data["verdict"]?.stringValue == "allowed")
            #expect(events[0].data["credential"]?.stringValue == "gh")
            #expect(events[0].data["sandbox"]?.stringValue == sandbox.rawValue)
            #expect(events[1].data["target"]?.stringValue == "evil.example:443")
            #expect(events[1].data["credential"] == nil)
        }
    }
}

@Suite("The token scanner the workspace tests rely on")
struct ByteScannerTests {
    @Test("finds a needle split across chunks, in any position, and nothing that is not there")
    func findsAcrossChunks() {
        let token = Array("tok_0123456789".utf8)
        let text = Array("....xx tok_0123456789 yy....".utf8)
        for split in 0...text.count {
            var scanner = ByteScanner(needles: [token, Array("absent".utf8)])
            scanner.feed(Array(text[..<split]))
            scanner.feed(Array(text[split...]))
            #expect(scanner.found == [0], "split at \(split)")
            #expect(scanner.sawToken && !scanner.sawControl)
        }
        var scanner = ByteScanner(needles: [token])
        for byte in text { scanner.feed([byte]) }
        #expect(scanner.found == [0], "one byte at a time")
    }
}
