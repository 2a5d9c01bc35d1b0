import CorralCore
import DockerEngine
import Foundation
import TestSupport
import Testing

@testable import CorralSandbox

/// What the host keeps to itself, tried the way an attacker would: a process in a sandbox
/// filling its workspace, and an unprivileged host user (uid 1000, the first account on a
/// Debian host) reaching for a sandbox's files and sockets.
@Suite("Host boundaries: workspace sizes, sandbox uids, private state", .engine)
struct HostBoundaryTests {
    // Security review finding 8: a sandbox could fill the host's disk through /workspace.
    @Test("a full workspace gives ENOSPC inside the sandbox and leaves the host's disk alone")
    func fullWorkspace() async throws {
        let fixture = try EngineFixture()
        let request = EngineFixture.request { $0.resources.disk = .mebibytes(64) }
        try await fixture.withSandbox(request) { sandbox in
            let size = try await fixture.bash(sandbox, "df -B1 --output=size /workspace | tail -1")
            let bytes = try #require(Int64(size.text.trimmingCharacters(in: .whitespacesAndNewlines)))
            // ext4 keeps some of it for itself; what the sandbox sees is at most what it asked for.
            #expect(bytes > 40 << 20 && bytes <= 64 << 20, "df shows \(bytes) bytes")
            let before = try Self.freeBytes(
                fixture.provisioner.configuration.environment.hostDirectory(for: sandbox.id))
            let fill = try await fixture.bash(
                sandbox, "dd if=/dev/zero of=/workspace/fill bs=1M count=512 2>&1; echo status=$?", timeout: 120)
            #expect(fill.text.contains("No space left on device"), "\(fill.text)")
            #expect(fill.text.contains("status=1"))
            let after = try Self.freeBytes(fixture.provisioner.configuration.environment.hostDirectory(for: sandbox.id))
            // The host lost at most the workspace's size (plus slack for the machine's own
            // writes), not the 512 MiB the sandbox tried to write.
            #expect(before - after < 160 << 20, "the host lost \(before - after) bytes")
            // Files written through the engine's archive API meet the same limit.
            await #expect(throws: CorralError.self) {
                try await sandbox.writeFile("/workspace/more.bin", contents: [UInt8](repeating: 1, count: 1 << 20))
            }
            // The sandbox keeps working, and freeing space frees it.
            let recover = try await fixture.bash(
                sandbox, "rm /workspace/fill && echo ok > /workspace/small && cat /workspace/small")
            #expect(recover.text == "ok\n")
        }
    }

    @Test("a sandbox's workspace is a file system of the default size, unmounted when the sandbox goes")
    func defaultDisk() async throws {
        let fixture = try EngineFixture()
        var host: URL?
        try await fixture.withSandbox { sandbox in
            let size = try await fixture.bash(sandbox, "df -B1 --output=size,target /workspace | tail -1")
            let fields = size.text.split(separator: " ", omittingEmptySubsequences: true)
            let bytes = try #require(fields.first.flatMap { Int64($0) })
            #expect(bytes > 9 << 30 && bytes <= 10 << 30, "df shows \(size.text)")
            host = fixture.provisioner.configuration.environment.hostDirectory(for: sandbox.id)
            let mounts = try Self.mounts()
            #expect(
                mounts.contains(host?.appendingPathComponent("workspace").path ?? "-"),
                "mounted: \(mounts.filter { $0.contains(sandbox.id.rawValue) }), host: \(host?.path ?? "-")")
        }
        let directory = try #require(host)
        #expect(!FileManager.default.fileExists(atPath: directory.path))
        #expect(try !Self.mounts().contains(directory.appendingPathComponent("workspace").path))
    }

    @Test("a workspace without a size limit (disk 0) is the operator's only")
    func unlimitedDiskIsOperatorOnly() async throws {
        let fixture = try EngineFixture()
        let request = EngineFixture.request {
            $0.resources.disk = ByteSize(bytes: 0)
            $0.tenant = TenantID(unchecked: "acme")
        }
        await #expect {
            _ = try await fixture.provisioner.provision(request)
        } throws: { error in
            (error as? CorralError)?.code == .permissionDenied
        }
        // The local tenant (the operator on the host) may: a plain directory, owned by the
        // sandbox's user.
        try await fixture.withSandbox(EngineFixture.request { $0.resources.disk = ByteSize(bytes: 0) }) { sandbox in
            let output = try await fixture.bash(sandbox, "echo x > /workspace/f && stat -c %u /workspace")
            #expect(output.text == "\(SandboxUser(for: sandbox.id).uid)\n")
        }
    }

    // Security review finding 9: sockets and files of a sandbox were reachable by any host user
    // with the sandbox's uid (1000), through /proc/PID/root, whatever the state directory's mode.
    @Test("a host user cannot reach a sandbox's files or sockets", arguments: [SandboxRuntime.runc, .runsc])
    func hostUserIsKeptOut(runtime: SandboxRuntime) async throws {
        let fixture = try EngineFixture()
        if runtime == .runsc {
            try #require(try await fixture.engine.info().runtimes["runsc"] != nil, "runsc is not registered")
        }
        try await fixture.withSandbox(EngineFixture.request { $0.runtime = runtime }) { sandbox in
            let written = try await fixture.bash(sandbox, "echo private > /workspace/secret && echo ok")
            #expect(written.text == "ok\n")
            let pid = try await fixture.engine.inspectContainer(sandbox.containerName).state.pid
            let environment = fixture.provisioner.configuration.environment
            let host = environment.hostDirectory(for: sandbox.id)
            let gateway = try #require(environment.gatewayDirectory(for: sandbox.id))
            let targets = [
                "/proc/\(pid)/root/workspace/secret",
                "/proc/\(pid)/root/.corral/gateway/control.sock",
                host.appendingPathComponent("workspace/secret").path,
                gateway.appendingPathComponent("control.sock").path,
            ]
            for target in targets {
                let attempt = try await Self.asHostUser(
                    """
                    import socket, sys
                    path = sys.argv[1]
                    try:
                        if path.endswith('.sock'):
                            s = socket.socket(socket.AF_UNIX); s.connect(path); print('connected')
                        else:
                            print(open(path).read().strip())
                    except OSError as e:
                        print('refused', e.errno)
                    """, target)
                #expect(attempt.hasPrefix("refused"), "uid 1000 reached \(target): \(attempt)")
            }
            // The sandbox itself still reaches its own (the control connection carried the commands).
            let own = try await fixture.bash(
                sandbox, "cat /workspace/secret; test -S /.corral/gateway/control.sock && echo socket")
            #expect(own.text == "private\nsocket\n")
        }
    }

    @Test("the sandboxes' directory is 0700, each gateway directory root:<sandbox gid> 0750")
    func hostDirectoryModes() async throws {
        let fixture = try EngineFixture()
        try await fixture.withSandbox { sandbox in
            let environment = fixture.provisioner.configuration.environment
            let host = environment.hostDirectory(for: sandbox.id)
            let gateway = try #require(environment.gatewayDirectory(for: sandbox.id))
            #expect(try Self.mode(host.deletingLastPathComponent()) == (0o700, 0, 0))
            #expect(try Self.mode(host) == (0o700, 0, 0))
            let user = SandboxUser(for: sandbox.id)
            #expect(try Self.mode(gateway) == (0o750, 0, user.gid))
            #expect(try Self.mode(host.appendingPathComponent("record.json")).0 == 0o600)
            let names = try await fixture.bash(sandbox, "id -un; getent group $(id -g) | cut -d: -f1; echo $HOME")
            #expect(names.text == "agent\nagent\n/home/agent\n")
        }
    }

    @Test("sandboxes get uids of their own, in a range no host account holds")
    func uidsAreDistinct() throws {
        let ids = (0..<1000).map { _ in SandboxID.random() }
        let uids = Set(ids.map { SandboxUser(for: $0).uid })
        #expect(uids.count > 990)
        #expect(uids.allSatisfy { SandboxUser.contains($0) })
        #expect(
            SandboxUser.conflictingAccounts().isEmpty,
            "host accounts in the range: \(SandboxUser.conflictingAccounts())")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("corral-uid-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let passwd = directory.appendingPathComponent("passwd")
        try Data("root:x:0:0::/root:/bin/sh\nintruder:x:1000000007:100::/home/i:/bin/sh\n".utf8).write(to: passwd)
        #expect(
            SandboxUser.conflictingAccounts(passwd: passwd.path, group: "/nonexistent") == [
                "user intruder (1000000007)"
            ])
    }

    // MARK: Helpers

    /// Runs a python3 script as uid and gid 1000 with no supplementary groups; its output.
    static func asHostUser(_ script: String, _ argument: String) async throws -> String {
        // On a thread of its own: waiting for a process would hold one of the few cooperative
        // threads every test shares.
        let result = try await runOnThread {
            try runCorralBlocking(
                ["--reuid", "1000", "--regid", "1000", "--clear-groups", "/usr/bin/python3", "-c", script, argument],
                executable: "/usr/bin/setpriv")
        }
        return result.stdout + result.stderr
    }

    static func freeBytes(_ url: URL) throws -> Int64 {
        let values = try FileManager.default.attributesOfFileSystem(forPath: url.deletingLastPathComponent().path)
        return (values[.systemFreeSize] as? NSNumber)?.int64Value ?? 0
    }

    static func mounts() throws -> Set<String> {
        // Read to the end: procfs files have no size, and a one-shot read stops at a page.
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/self/mountinfo"))
        defer { try? handle.close() }
        let text = String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
        return Set(
            text.split(separator: "\n").compactMap { line in
                let fields = line.split(separator: " ")
                return fields.count > 4 ? String(fields[4]) : nil
            })
    }

    static func mode(_ url: URL) throws -> (UInt32, UInt32, UInt32) {
        var info = stat()
        guard stat(url.path, &info) == 0 else { throw CorralError(.io, "cannot stat \(url.path)") }
        return (UInt32(info.st_mode & 0o7777), info.st_uid, info.st_gid)
    }
}
