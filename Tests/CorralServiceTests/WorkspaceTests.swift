import CorralCore
import CorralGateway
import CorralSandbox
import CorralSession
import DockerEngine
import Foundation
import TestSupport
import Testing

@testable import CorralService

@Suite("Repositories in sandboxes through the gateway, on a real engine", .engine, .serialized)
struct WorkspaceTests {
    @Test(
        "in a warm-claimed sandbox plain git clones, commits and pushes its own branch; main, force-pushes and other repositories are refused; the token is nowhere"
    )
    func pushOwnBranchOnly() async throws {
        let template = WorkspaceFixture.template(minIdle: 1)
        try await WorkspaceFixture.with(templates: [template]) { fixture in
            try fixture.upstream.createRepository(owner: WorkspaceFixture.owner, name: "secret-plans")
            let pool = try #require(try fixture.runner.pools.first)
            _ = try await withTimeout(.seconds(120), "an idle member") {
                try await pool.waitForStatus { $0.idle >= 1 }
            }
            let session = try await fixture.sessions.create(tenant: .local)
            let workspace = try fixture.workspace(write: true)
            var request = ProvisionRequest()
            request.template = template.name
            request.session = session.id
            request.workspace = workspace
            let sandbox = try await fixture.provisioner.provision(request)
            #expect(sandbox.provisioning?.path == .warm, "the workspace is bound after a warm claim")
            #expect((sandbox.provisioning?.phases["workspace"] ?? 0) > 0)
            let branch = "corral/\(sandbox.id)"

            // The work tree: on the sandbox's branch, with the credential-free remote.
            let head = try await fixture.sh(
                sandbox, "git rev-parse --abbrev-ref HEAD && cat README.md && stat -c %u:%g .")
            #expect(head.stdout == "\(branch)\nrocket\n\(SandboxUser(for: sandbox.id))\n", "\(head.stderr)")
            let remote = try await fixture.sh(sandbox, "git remote get-url origin")
            #expect(remote.stdout == workspace.repository.gatewayRemoteURL + "\n")

            // Commit and push with plain git: the branch lands upstream.
            let pushed = try await fixture.sh(
                sandbox, "echo change > change.txt && git add change.txt && git commit -q -m change && git push -q")
            #expect(pushed.status.exitCode == 0, "\(pushed.stderr)")
            let local = try await fixture.sh(sandbox, "git rev-parse HEAD").stdout.trimmingCharacters(in: .newlines)
            #expect(fixture.upstream.head(owner: WorkspaceFixture.owner, name: "rocket", branch: branch) == local)

            // main is not the sandbox's branch.
            let mainBefore = fixture.upstream.head(owner: WorkspaceFixture.owner, name: "rocket", branch: "main")
            let toMain = try await fixture.sh(sandbox, "git push origin HEAD:main")
            #expect(toMain.status.exitCode != 0)
            #expect(toMain.stderr.contains("refs/heads/main is not pushable from this sandbox"), "\(toMain.stderr)")
            #expect(fixture.upstream.head(owner: WorkspaceFixture.owner, name: "rocket", branch: "main") == mainBefore)

            // A rewritten history is not a fast-forward.
            let forced = try await fixture.sh(
                sandbox, "git commit -q --amend -m rewritten && git push --force origin HEAD")
            #expect(forced.status.exitCode != 0)
            #expect(forced.stderr.contains("force-push refused"), "\(forced.stderr)")
            #expect(fixture.upstream.head(owner: WorkspaceFixture.owner, name: "rocket", branch: branch) == local)

            // A repository the sandbox was not granted, on the same host and credential scope.
            let other = try await fixture.sh(
                sandbox, "git clone http://git.corral/\(fixture.repository("secret-plans")).git /tmp/other")
            #expect(other.status.exitCode != 0)
            #expect(other.stderr.contains("corral gateway: this sandbox has no grant for"), "\(other.stderr)")

            // The decisions became events of the session, each without the token.
            var decisions: [JSONValue] = []
            for try await event in fixture.sessions.read(session.id) {
                fixture.expectNoToken(in: String(describing: event), "the session's events")
                if event.type == SessionGatewayEvents.eventType { decisions.append(event.data) }
            }
            let summary = decisions.map {
                "\($0["action"]?.stringValue ?? "") \($0["verdict"]?.stringValue ?? "") \($0["reason"]?.stringValue ?? "")"
            }
            #expect(decisions.allSatisfy { $0["sandbox"]?.stringValue == sandbox.id.rawValue })
            #expect(summary.contains { $0.hasPrefix("git.fetch allowed") }, "\(summary)")
            #expect(summary.contains { $0.hasPrefix("git.push allowed push of") }, "\(summary)")
            #expect(
                summary.contains { $0.hasPrefix("git.push denied") && $0.contains("refs/heads/main") }, "\(summary)")
            #expect(summary.contains { $0.hasPrefix("git.push denied") && $0.contains("force-push") }, "\(summary)")
            #expect(summary.contains { $0.hasPrefix("git.fetch denied") && $0.contains("no grant") }, "\(summary)")
            #expect(
                decisions.contains { $0["credential"]?.stringValue == WorkspaceFixture.credentialName },
                "decisions name the credential used")

            try await fixture.expectTokenNowhere(in: sandbox)
            try await sandbox.remove()
            #expect(try fixture.gateway.attachedSandboxes.isEmpty, "removal detaches the gateway")
        }
    }

    @Test("an allow-listed host is reachable, plain and through CONNECT; others get 403 with a reason")
    func egressAllowList() async throws {
        let allowed = try StubHTTPServer(loopbackHandler: { request, connection in
            connection.respond(status: 200, body: Array("hello from \(request.target)\n".utf8))
            return false
        })
        let other = try StubHTTPServer(loopbackHandler: { _, connection in
            connection.respond(status: 200, body: Array("should not be seen\n".utf8))
            return false
        })
        defer {
            allowed.stop()
            other.stop()
        }
        let allowedPort = try #require(allowed.port)
        let otherPort = try #require(other.port)
        let template = WorkspaceFixture.template(minIdle: 0) { $0.egress = ["127.0.0.1:\(allowedPort)"] }
        try await WorkspaceFixture.with(templates: [template]) { fixture in
            var request = ProvisionRequest()
            request.template = template.name
            // A name that resolves to loopback is refused even when listed: only the literal
            // address reaches the host's own services.
            request.egressHosts = ["localhost:\(otherPort)"]
            let sandbox = try await fixture.provisioner.provision(request)
            #expect(try await sandbox.info().egressHosts == ["127.0.0.1:\(allowedPort)", "localhost:\(otherPort)"])

            let plain = try await fixture.sh(sandbox, Self.proxyRequest("GET http://127.0.0.1:\(allowedPort)/plain"))
            #expect(plain.stdout.hasPrefix("HTTP/1.1 200"), "\(plain.stdout)")
            #expect(plain.stdout.contains("hello from /plain"))

            let tunnel = try await fixture.sh(
                sandbox,
                """
                exec 3<>/dev/tcp/127.0.0.1/3128
                printf 'CONNECT 127.0.0.1:\(allowedPort) HTTP/1.1\\r\\nHost: 127.0.0.1:\(allowedPort)\\r\\n\\r\\n' >&3
                IFS= read -r status <&3 && echo "$status" && read -r _ <&3
                printf 'GET /tunnelled HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n' >&3
                cat <&3
                """)
            #expect(tunnel.stdout.hasPrefix("HTTP/1.1 200 Connection Established"), "\(tunnel.stdout)")
            #expect(tunnel.stdout.contains("hello from /tunnelled"))

            let denied = try await fixture.sh(sandbox, Self.proxyRequest("GET http://127.0.0.1:\(otherPort)/x"))
            #expect(denied.stdout.hasPrefix("HTTP/1.1 403"), "\(denied.stdout)")
            #expect(denied.stdout.contains("egress to 127.0.0.1:\(otherPort) is denied"))
            let byName = try await fixture.sh(sandbox, Self.proxyRequest("GET http://localhost:\(otherPort)/x"))
            #expect(byName.stdout.hasPrefix("HTTP/1.1 403"), "\(byName.stdout)")
            #expect(byName.stdout.contains("resolves to the internal address"))
            #expect(!(denied.stdout + byName.stdout).contains("should not be seen"))
            #expect(other.requests.isEmpty, "nothing denied reached the other server")
            #expect(allowed.requests.map(\.target) == ["/plain", "/tunnelled"])
            try await sandbox.remove()
        }
    }

    @Test("a sandbox reaches only its own socket: another sandbox's grant does not serve it")
    func socketsAreSeparate() async throws {
        try await WorkspaceFixture.with { fixture in
            let owner = try await fixture.provisioner.provision(
                try fixture.request { $0.workspace = try fixture.workspace() })
            let stranger = try await fixture.provisioner.provision(fixture.request())
            let ownerSocket = try #require(
                try fixture.provisioner.configuration.environment.gatewayDirectory(for: owner.id)
            ).appendingPathComponent("gateway.sock").path
            #expect(FileManager.default.fileExists(atPath: ownerSocket))

            let seen = try await fixture.sh(
                stranger,
                """
                ls -A /.corral/gateway
                test -e '\(ownerSocket)' && echo "sees the other socket"
                touch /.corral/gateway/another.sock 2>/dev/null && echo "made a socket"
                git clone http://git.corral/\(fixture.repository("rocket")).git /tmp/r
                """)
            #expect(
                seen.stdout == "control.sock\ngateway.sock\n",
                "only its own sockets, in a read-only directory: \(seen.stdout)")
            #expect(seen.stderr.contains("corral gateway: this sandbox has no grant for"), "\(seen.stderr)")
            // The owner's grant works for the owner.
            let fetched = try await fixture.sh(owner, "git fetch -q origin && echo ok")
            #expect(fetched.stdout == "ok\n", "\(fetched.stderr)")
            try await owner.remove()
            try await stranger.remove()
        }
    }

    @Test("a runsc (gVisor) sandbox clones through its gateway, and a read grant refuses pushes")
    func runsc() async throws {
        try await WorkspaceFixture.with { fixture in
            let sandbox = try await fixture.provisioner.provision(
                try fixture.request {
                    $0.runtime = .runsc
                    $0.workspace = try fixture.workspace(ref: "main", write: false)
                })
            let state = try await fixture.sh(sandbox, "git log --oneline | wc -l && git status --short | wc -l")
            #expect(state.stdout == "1\n0\n", "\(state.stderr)")
            let push = try await fixture.sh(
                sandbox, "git commit -q --allow-empty -m empty && git fetch -q origin && git push -q origin HEAD")
            #expect(push.status.exitCode != 0)
            #expect(push.stderr.contains("granted read-only to this sandbox"), "\(push.stderr)")
            try await sandbox.remove()
        }
    }

    @Test(
        "an unknown host, a missing or revoked credential and a missing ref fail provisioning with the reason, leaving nothing"
    )
    func badInput() async throws {
        try await WorkspaceFixture.with { fixture in
            try fixture.upstream.createRepository(owner: "elsewhere", name: "tool")
            let cases: [(String, SandboxWorkspace, String)] = [
                (
                    "unknown host", try SandboxWorkspace(repository: "nohost.invalid/acme/rocket"),
                    "the gateway says: cannot reach nohost.invalid"
                ),
                (
                    "no credential", try SandboxWorkspace(repository: fixture.repository("tool", owner: "elsewhere")),
                    "asks for a credential for elsewhere/tool, and the vault holds none"
                ),
                (
                    "missing ref", try fixture.workspace(ref: "no-such-branch"),
                    "no branch, tag or commit 'no-such-branch'"
                ),
            ]
            for (what, workspace, reason) in cases {
                await fixture.expectProvisionFails(fixture.request { $0.workspace = workspace }, what, reason)
            }
            fixture.upstream.revoke(fixture.token)
            await fixture.expectProvisionFails(
                try fixture.request { $0.workspace = try fixture.workspace() }, "revoked credential",
                "refused the vault credential '\(WorkspaceFixture.credentialName)'")
        }
    }

    @Test("a restarted service attaches live sandboxes' gateways again; removal and the reaper detach")
    func lifecycle() async throws {
        // The background reaper sweeps at start only: the clock never reaches its interval,
        // so the sweep below is the one that sees the sandbox expire.
        try await WorkspaceFixture.with(reapInterval: .seconds(86_400)) { fixture in
            let kept = try await fixture.provisioner.provision(
                try fixture.request {
                    $0.workspace = try fixture.workspace()
                    $0.ttl = .seconds(7200)
                })
            let record = try #require(try fixture.provisioner.records().read(kept.id))
            #expect(record.version == SandboxRecord.currentVersion)
            #expect(record.workspace?.branch == "corral/\(kept.id)")
            #expect(record.gateway?.gitGrants.map(\.access) == [.read])

            await fixture.stop()
            let cutOff = try await fixture.sh(kept, "git fetch origin")
            #expect(cutOff.status.exitCode != 0, "no gateway, no way out")

            try await fixture.start()
            try await waitUntil("the sandbox attached again") {
                try fixture.gateway.attachedSandboxes.contains(kept.id)
            }
            let fetched = try await fixture.sh(kept, "git fetch -q origin && echo ok")
            #expect(fetched.stdout == "ok\n", "\(fetched.stderr)")

            let expiring = try await fixture.provisioner.provision(
                fixture.request {
                    $0.egressHosts = ["example.com"]
                    $0.ttl = .seconds(600)
                })
            #expect(try fixture.gateway.attachedSandboxes.contains(expiring.id))
            fixture.clock.advance(by: .seconds(3600))
            let sweep = try await fixture.runner.reaper.sweep()
            #expect(sweep.removed == [expiring.id: "expired"])
            #expect(try !fixture.gateway.attachedSandboxes.contains(expiring.id), "the reaper detaches")
            #expect(!fixture.sandboxDirectories().contains(expiring.id.rawValue))

            try await fixture.provisioner.remove(kept.id)
            #expect(try fixture.gateway.attachedSandboxes.isEmpty, "removal detaches")
            #expect(fixture.sandboxDirectories().isEmpty)
        }
    }

    /// A bash script sending one request to the sandbox's proxy and printing the answer.
    static func proxyRequest(_ line: String) -> String {
        let target = line.split(separator: " ")[1]
        let host = target.dropFirst("http://".count).prefix { $0 != "/" }
        return """
            exec 3<>/dev/tcp/127.0.0.1/3128
            printf '\(line) HTTP/1.1\\r\\nHost: \(host)\\r\\nConnection: close\\r\\n\\r\\n' >&3
            cat <&3
            """
    }
}

extension WorkspaceFixture {
    /// Runs a bash script in the sandbox as an agent would; its output is checked for the token.
    func sh(_ sandbox: Sandbox, _ script: String) async throws -> CommandResult {
        let result = try await sandbox.run(
            SandboxCommand(["/bin/bash", "-c", script], timeout: .seconds(120)), limit: 1 << 20)
        expectNoToken(in: result.stdout + result.stderr, "the output of `\(script.prefix(60))`")
        return result
    }

    /// Provisioning fails with `reason` in one line, and leaves no container, no directory and
    /// no gateway socket behind.
    func expectProvisionFails(
        _ request: ProvisionRequest, _ what: String, _ reason: String, sourceLocation: SourceLocation = #_sourceLocation
    ) async {
        do {
            let sandbox = try await provisioner.provision(request)
            Issue.record("\(what): provisioning succeeded", sourceLocation: sourceLocation)
            try? await sandbox.remove()
        } catch let error as CorralError {
            #expect(error.message.contains(reason), "\(what): \(error.message)", sourceLocation: sourceLocation)
            #expect(!error.message.contains("\n"), "\(what): one line", sourceLocation: sourceLocation)
            expectNoToken(in: "\(error) \(error.hint ?? "")", "the error", sourceLocation: sourceLocation)
        } catch {
            Issue.record("\(what): \(error)", sourceLocation: sourceLocation)
        }
        let left = (try? await containers().map(\.name)) ?? ["(cannot list)"]
        #expect(left.isEmpty, "\(what): containers left: \(left)", sourceLocation: sourceLocation)
        #expect(sandboxDirectories().isEmpty, "\(what): directories left", sourceLocation: sourceLocation)
        #expect(
            (try? gateway.attachedSandboxes) == [], "\(what): gateway sockets left", sourceLocation: sourceLocation)
    }

    /// The token is in no byte of the sandbox: not its image's filesystem as the engine exports
    /// it, not the workspace volume or the tmpfs mounts, not any process's arguments or
    /// environment, not its git configuration, not what the engine says about it.
    func expectTokenNowhere(in sandbox: Sandbox, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        // The image's /etc/gitconfig holds this line: the export was scanned.
        var exported = scanner(control: "email = agent@corral.invalid")
        try await engine.withContainerExport(sandbox.containerName) { body in
            for try await chunk in body { exported.feed(chunk) }
        }
        let exportedSeen = exported.sawControl
        #expect(exportedSeen, "the export holds the root filesystem", sourceLocation: sourceLocation)
        let exportedLeaked = exported.sawToken
        #expect(!exportedLeaked, "the token is in the exported filesystem", sourceLocation: sourceLocation)

        // Volumes and tmpfs mounts are not in an export: read them from inside. The clone's
        // HEAD names the sandbox's branch.
        var mounts = scanner(control: "ref: refs/heads/corral/\(sandbox.id)")
        let archived = try await sandbox.run(
            SandboxCommand(
                ["/bin/sh", "-c", "tar -cf - /workspace /tmp /home/agent /.corral/gateway 2>/dev/null; true"],
                timeout: .seconds(120))
        ) { stream, bytes in
            if stream == .stdout { mounts.feed(bytes) }
        }
        let mountsSeen = mounts.sawControl
        #expect(archived.exitCode == 0 && mountsSeen, "the mounts were read", sourceLocation: sourceLocation)
        let mountsLeaked = mounts.sawToken
        #expect(!mountsLeaked, "the token is in the workspace or a tmpfs", sourceLocation: sourceLocation)

        // Every process's arguments and environment; corral-init's environment names the sandbox.
        var processes = scanner(control: "CORRAL_SANDBOX=\(sandbox.id)")
        _ = try await sandbox.run(
            SandboxCommand(
                [
                    "/bin/sh", "-c",
                    "ps -eo pid,user,args; for p in /proc/[0-9]*; do cat $p/cmdline $p/environ 2>/dev/null; done",
                ],
                timeout: .seconds(60))
        ) { _, bytes in
            processes.feed(bytes)
        }
        let processesSeen = processes.sawControl
        #expect(processesSeen, "the processes were read", sourceLocation: sourceLocation)
        let processesLeaked = processes.sawToken
        #expect(!processesLeaked, "the token is in a process", sourceLocation: sourceLocation)

        let config = try await sh(sandbox, "git config --list --show-origin; env")
        #expect(config.stdout.contains("http.proxy=http://127.0.0.1:3128"), sourceLocation: sourceLocation)
        #expect(!config.stdout.lowercased().contains("extraheader"), sourceLocation: sourceLocation)
        #expect(!config.stdout.lowercased().contains("authorization"), sourceLocation: sourceLocation)

        let inspect = try Self.dockerInspect(sandbox.containerName)
        #expect(inspect.contains("HTTP_PROXY"), "the inspection was read", sourceLocation: sourceLocation)
        expectNoToken(in: inspect, "the engine's inspection", sourceLocation: sourceLocation)
    }

    /// `docker inspect`, all of it, as an operator would see it.
    static func dockerInspect(_ name: String) throws -> String {
        var environment = ProcessInfo.processInfo.environment
        if TestEnvironment.engineEndpoint.hasPrefix("unix://") {
            environment["DOCKER_HOST"] = TestEnvironment.engineEndpoint
        }
        let output = try ChildProcess.run("/usr/bin/env", ["docker", "inspect", name], environment: environment)
        return String(decoding: output.stdout, as: UTF8.self)
    }
}
