import ControlProtocol
import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import Logging
import TestSupport
import Testing

/// Per-command flow control on the control connection.
@Suite("Flow control per command on the control connection", .engine)
struct FlowControlTests {
    static let runtimes: [SandboxRuntime] = [.runc, .runsc]

    // Protocol 2 stopped reading the whole connection once 4 MiB waited for readers: the stalled
    // command's output filled that, and the flood beside it stopped too (this test then hits its
    // time limit). Checked by completion, not by timing.
    @Test(
        "a 50 MB flood completes while another command's output is left unread, and the stalled one resumes when read",
        .timeLimit(.minutes(3)), arguments: runtimes)
    func stalledReaderBesideBusy(runtime: SandboxRuntime) async throws {
        let fixture = try EngineFixture(path: .control)
        try await fixture.withSandbox(on: runtime) { sandbox in
            // 20 MB that nobody reads for now: more than its window, its corral-init buffer and
            // the old 4 MiB together.
            let stalled = try await sandbox.start(
                SandboxCommand(["sh", "-c", "head -c 20000000 /dev/zero; echo stalled-done"]))
            // Give it time to fill everything it may.
            try await Task.sleep(for: .seconds(1))
            let busy = try await sandbox.start(SandboxCommand(["head", "-c", "50000000", "/dev/zero"]))
            var received = 0
            for try await chunk in busy.output { received += chunk.bytes.count }
            #expect(received == 50_000_000)
            #expect(try await busy.wait().exitCode == 0)

            // Once read, the stalled one completes too, with nothing lost.
            var stalledBytes = 0
            var tail: [UInt8] = []
            for try await chunk in stalled.output {
                stalledBytes += chunk.bytes.count
                tail = Array((tail + chunk.bytes).suffix(32))
            }
            #expect(stalledBytes == 20_000_000 + "stalled-done\n".utf8.count)
            #expect(String(decoding: tail, as: UTF8.self).hasSuffix("stalled-done\n"))
            #expect(try await stalled.wait().exitCode == 0)
        }
    }

    // 64 quiet commands each held a 256 KiB window of the connection's 16 MiB budget, and a 65th
    // started with none: it could not send a byte until one of them ended (through corrald, 110
    // `sleep 20` tool calls and a `ls` beside them waited 20 s).
    @Test("a command answers at once beside 80 quiet ones that hold their windows", .timeLimit(.minutes(3)))
    func besideManyQuietCommands() async throws {
        let fixture = try EngineFixture(path: .control)
        try await fixture.withSandbox(EngineFixture.request { $0.resources.pids = 1024 }) { sandbox in
            var quiet: [RunningCommand] = []
            for _ in 0..<80 { quiet.append(try await sandbox.start(SandboxCommand(["sleep", "60"]))) }
            let clock = ContinuousClock()
            let started = clock.now
            let beside = try await sandbox.run(SandboxCommand(["echo", "beside"]))
            let took = clock.now - started
            #expect(beside.stdout == "beside\n")
            // The quiet ones run for a minute: an answer within it came past them.
            #expect(took < .seconds(30), "the command beside them took \(took)")
            for command in quiet { try? await command.signal(.kill) }
        }
    }

    // The stream window bounds what the host holds for a command nobody reads: protocol 2 read
    // until 4 MiB waited per connection; with many such commands each holds one window.
    @Test("eight stalled commands of 10 MB each hold the host to their windows, and a command beside them runs")
    func memoryBoundManyStalled() async throws {
        let fixture = try EngineFixture(path: .control)
        try await fixture.withSandbox { sandbox in
            let (stalled, growth) = try await peakResidentGrowth {
                var stalled: [RunningCommand] = []
                for _ in 0..<8 {
                    stalled.append(try await sandbox.start(SandboxCommand(["head", "-c", "10000000", "/dev/zero"])))
                }
                try await Task.sleep(for: .seconds(2))
                let beside = try await sandbox.run(SandboxCommand(["echo", "beside"]))
                #expect(beside.stdout == "beside\n")
                return stalled
            }
            print("eight stalled commands: resident memory grew by \(growth >> 10) KiB")
            #expect(growth < 24 << 20, "the host grew by \(growth >> 20) MiB")
            for command in stalled { command.detach() }
        }
    }
}

/// The host's end against a corral-init that breaks the window: it is cut off.
@Suite("The control connection's windows, against a peer on this machine")
struct ControlWindowTests {
    @Test("a peer that sends more output than a stream's window loses its connection, and the command fails")
    func overrunClosesConnection() async throws {
        try await withTemporaryDirectory { root in
            let sandbox = SandboxID.random()
            let directory = try ControlChannelsTests.gatewayDirectory(root, sandbox)
            // No engine: the exec goes to the peer below, which plays corral-init.
            let provisioner = Provisioner(
                engine: try DockerEngineClient(parsing: "unix://\(root.path)/no-engine.sock"),
                configuration: .init(environment: SandboxEnvironment(initBinary: "/bin/true", sandboxesDirectory: root))
            )
            let channels = try #require(provisioner.control)
            defer { channels.closeAll() }
            try await channels.listen(sandbox, directory: directory, newSandbox: true)
            let key = try #require(
                ControlKey(hex: Array(try Data(contentsOf: directory.appendingPathComponent(ControlKey.fileName)))))
            let peer = try PeerSocket(path: directory.appendingPathComponent(ControlChannels.socketName).path)
            try peer.send(ControlChannelsTests.hello(key))
            #expect(try peer.readKind() == ControlFrameKind.welcome.rawValue)
            #expect(await channels.waitForConnection(sandbox, timeout: .seconds(5)))

            let handle = provisioner.handle(sandbox)
            let started = Task { try await handle.start(SandboxCommand(["flood"])) }
            let (kind, id) = try await runOnThread { () -> (UInt8, UInt32) in
                let frame = try peer.readFrame()
                return (frame?.kind ?? 0, frame?.id ?? 0)
            }
            #expect(kind == ControlFrameKind.exec.rawValue)
            try peer.send(frame(.started, id, StartedReport(pid: 7, startedMilliseconds: 0).encoded()))
            let command = try await started.value
            #expect(command.pid == 7)
            // Five full frames: 320 KiB against a window of 256 KiB.
            let chunk = [UInt8](repeating: 0x61, count: ControlFrameHeader.maxSandboxPayload)
            let payload = (0..<5).flatMap { _ in frame(.stdout, id, chunk) }
            try await runOnThread { try? peer.send(payload) }
            // Nothing is read before the host judged the frames: a read would hand credit back,
            // and a fifth frame that arrived after it would be within what was granted.
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(10)
            while channels.isConnected(sandbox) && clock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(!channels.isConnected(sandbox), "the connection that broke its window is closed")
            await #expect(throws: (any Error).self) {
                for try await _ in command.output {}
            }
        }
    }

    func frame(_ kind: ControlFrameKind, _ id: UInt32, _ payload: [UInt8]) -> [UInt8] {
        ControlFrameHeader(kind, id: id, length: payload.count).bytes + payload
    }
}
