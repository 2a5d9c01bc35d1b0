import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import TestSupport
import Testing

/// Detached commands: they outlive their caller and the control connection, another process
/// that adopts the sandbox lists and re-attaches them, and what their buffer no longer holds
/// is reported as dropped.
@Suite("Detached commands, re-attached through another process", .engine)
struct DetachAttachTests {
    static let runtimes: [SandboxRuntime] = [.runc, .runsc]

    /// Writes 2000 numbered lines, waits for /tmp/go, writes 3 MiB of numbered 63-byte lines,
    /// then waits for ever (until signalled).
    static let script = """
        i=0; while [ $i -lt 2000 ]; do printf 'first %010d\\n' $i; i=$((i+1)); done
        echo 'first done'
        while [ ! -e /tmp/go ]; do sleep 0.05; done
        python3 -c 'import sys
        for i in range(49152): sys.stdout.write("second %055d\\n" % i)
        sys.stdout.flush()'
        echo 'second done'
        exec sleep 100000
        """

    static var firstPart: String {
        (0..<2000).map { String(format: "first %010d\n", $0) }.joined() + "first done\n"
    }

    static func secondLine(_ index: Int) -> String { String(format: "second %055d\n", index) }

    // Without detach, dropping the connection stops the command (corral-init kills the group
    // of a command whose caller is gone) and the adopter lists it as exited; without the ring
    // and offsets, the re-attach gets nothing back or cannot say what was dropped; without
    // list and signal, the adopter cannot find or stop it.
    @Test(
        "a detached command outlives its connection; another process lists it, re-attaches with nothing lost within the buffer and drops reported beyond it, and kills it",
        .timeLimit(.minutes(5)), arguments: runtimes)
    func detachAndAdopt(runtime: SandboxRuntime) async throws {
        let fixture = try EngineFixture(path: .control)
        try await fixture.withSandbox(on: runtime) { sandbox in
            let command = try await sandbox.start(SandboxCommand(["sh", "-c", Self.script]), detached: true)
            #expect(command.isDetached)
            let (output, reader) = OutputCollector.reading(command)
            try await output.waitFor("the first part") { $0.contains("first done\n") }
            let plain = try await sandbox.start(SandboxCommand(["sleep", "100000"]))

            // The maker goes away (as a killed process would): its connection drops.
            fixture.provisioner.control?.close(sandbox.id)
            await reader.value
            #expect(output.error?.contains("runs on") == true, "\(output.error ?? "no error")")
            await #expect(throws: CorralError.self) { _ = try await plain.wait() }

            let adopter = try await fixture.adopter(of: sandbox)
            defer { adopter.control?.close(sandbox.id) }
            let again = adopter.handle(sandbox.id)
            // The command that was not detached goes with the connection (corral-init stops it
            // as soon as the connection drops; its end may take a moment).
            var listed = try await again.commands()
            let clock = ContinuousClock()
            let settled = clock.now + .seconds(30)
            while listed.first(where: { $0.id == plain.id })?.state == .running && clock.now < settled {
                try await Task.sleep(for: .milliseconds(50))
                listed = try await again.commands()
            }
            let mine = try #require(listed.first { $0.id == command.id }, "\(listed)")
            #expect(mine.state == .running && mine.detached && mine.pid > 0)
            #expect(mine.arguments == ["sh", "-c", Self.script])
            #expect(mine.outputEnd == Int64(Self.firstPart.utf8.count))
            let stopped = try #require(listed.first { $0.id == plain.id }, "\(listed)")
            #expect(stopped.state == .exited && stopped.status?.exitCode == 143, "\(stopped)")

            // Everything is still in the buffer: a replay from 0 is whole.
            let replay = try await again.attach(command.id, from: 0)
            #expect(replay.startOffset == 0 && replay.droppedBytes == 0)
            let (replayed, replayReader) = OutputCollector.reading(replay)
            try await replayed.waitFor("the replay") { $0.count >= Self.firstPart.utf8.count }
            #expect(replayed.text == Self.firstPart)
            replay.detach()
            await replayReader.value

            // Nobody reads while 3 MiB more come: the oldest output is dropped, and an attach
            // from 0 says how much.
            _ = try await again.run(SandboxCommand(["touch", "/tmp/go"]))
            let secondTotal = 49152 * Self.secondLine(0).utf8.count + "second done\n".utf8.count
            let end = Int64(Self.firstPart.utf8.count + secondTotal)
            let deadline = clock.now + .seconds(120)
            while try await again.commands().first(where: { $0.id == command.id })?.outputEnd != end {
                guard clock.now < deadline else { throw CancellationError() }
                try await Task.sleep(for: .milliseconds(100))
            }
            let late = try await again.attach(command.id, from: 0)
            #expect(late.startOffset == end - (1 << 20), "the newest 1 MiB is kept")
            #expect(late.droppedBytes == late.startOffset)
            let (tail, tailReader) = OutputCollector.reading(late)
            try await tail.waitFor("the tail") { $0.hasSuffix("second done\n") }
            #expect(tail.count == 1 << 20)
            let lines = tail.text.split(separator: "\n", omittingEmptySubsequences: false)
            // The first line may be cut; every whole line after it is the right one, in order.
            let last = 49151
            let whole = lines.dropFirst().dropLast(2)
            for (index, line) in whole.reversed().enumerated() {
                let expected = Self.secondLine(last - index)
                if String(line) + "\n" != expected {
                    Issue.record("line \(index) from the end is \(line.prefix(80)), expected \(expected)")
                    break
                }
            }

            // kill: the attached stream sees the command end by the signal.
            try await again.signal(id: command.id, .terminate)
            let status = try await late.wait()
            #expect(status.exitCode == 143, "128 + SIGTERM")
            await tailReader.value
            let ended = try await again.commands().first { $0.id == command.id }
            #expect(ended?.state == .exited && ended?.status?.exitCode == 143)
        }
    }

    @Test(
        "attaching to an unknown or a finished command, or signalling one, is an error that says which",
        arguments: runtimes)
    func attachErrors(runtime: SandboxRuntime) async throws {
        let fixture = try EngineFixture(path: .control)
        try await fixture.withSandbox(on: runtime) { sandbox in
            let unknown = CommandID.random()
            let missing = await #expect(throws: CorralError.self) { _ = try await sandbox.attach(unknown) }
            #expect(missing?.code == .notFound)
            #expect(missing?.description.contains("no command \(unknown)") == true, "\(String(describing: missing))")

            let quick = try await sandbox.start(SandboxCommand(["sh", "-c", "exit 5"]), detached: true)
            #expect(try await quick.wait().exitCode == 5)
            let finished = await #expect(throws: CorralError.self) { _ = try await sandbox.attach(quick.id) }
            #expect(finished?.code == .conflict)
            #expect(finished?.description.contains("has finished, with status 5") == true)
            let signalled = await #expect(throws: CorralError.self) {
                try await sandbox.signal(id: quick.id, .kill)
            }
            #expect(signalled?.description.contains("has finished") == true)
            let nobody = await #expect(throws: CorralError.self) { try await sandbox.signal(id: unknown, .kill) }
            #expect(nobody?.code == .notFound)
            #expect(throws: CorralError.self) { _ = try CommandSignal(parsing: "NOPE") }
            #expect(try CommandSignal(parsing: "sigkill") == .kill)
            #expect(try CommandSignal(parsing: "15") == .terminate)
            #expect(try CommandSignal(parsing: "RTMIN+2").number == 36)
        }
    }

    @Test("signals by name reach the command's group; a command not started detached stops when its caller goes away")
    func signalsAndCancellation() async throws {
        let fixture = try EngineFixture(path: .control)
        try await fixture.withSandbox { sandbox in
            let trap = try await sandbox.start(
                SandboxCommand(["sh", "-c", "trap 'echo got USR1' USR1; echo ready; while :; do sleep 0.05; done"]))
            let (output, reader) = OutputCollector.reading(trap)
            try await output.waitFor("ready") { $0.contains("ready\n") }
            try await trap.signal(try CommandSignal(parsing: "SIGUSR1"))
            try await output.waitFor("the trap") { $0.contains("got USR1\n") }
            // The reader's task is cancelled: the command is stopped inside the sandbox.
            reader.cancel()
            await reader.value
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(30)
            var state: CommandInfo.State?
            repeat {
                try await Task.sleep(for: .milliseconds(50))
                state = try await sandbox.commands().first { $0.id == trap.id }?.state
            } while state == .running && clock.now < deadline
            #expect(state == .exited)
        }
    }

    // "Never silently": a command whose sandbox vanished is reported lost.
    @Test(
        "a detached command whose sandbox is removed is reported lost, and so is every listing after",
        arguments: runtimes)
    func lostWithSandbox(runtime: SandboxRuntime) async throws {
        let fixture = try EngineFixture(path: .control)
        let sandbox = try await fixture.provisioner.provision(EngineFixture.request { $0.runtime = runtime })
        let command = try await sandbox.start(SandboxCommand(["sleep", "100000"]), detached: true)
        try await fixture.engine.removeContainer(sandbox.containerName, force: true)
        let lost = await #expect(throws: CorralError.self) { _ = try await command.wait() }
        #expect(lost?.description.contains("is lost") == true, "\(String(describing: lost))")
        #expect(lost?.description.contains("gone") == true)
        let listing = await #expect(throws: CorralError.self) { _ = try await sandbox.commands() }
        #expect(listing?.description.contains("lost") == true, "\(String(describing: listing))")
        try? await sandbox.remove()
    }
}
