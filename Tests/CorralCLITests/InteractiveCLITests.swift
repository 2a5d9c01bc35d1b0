import CorralCore
import Foundation
import TestSupport
import Testing

/// Issue 14 on the command line: `exec -i`, `exec --detach`, `attach`, `ps`, `kill`, `cp` to
/// tmpfs, and `exec -it` on a real terminal (tmux), through a service on corral.sock.
@Suite("Commands as people use them, on the command line", .engine, .serialized, .timeLimit(.minutes(10)))
struct InteractiveCLITests {
    static func sandbox(_ service: ServiceFixture) async throws -> String {
        let created = try await service.local(["sandbox", "create", "--json"])
        #expect(created.status == 0, "\(created.stderr)")
        return try #require(
            try JSONDecoder().decode(JSONValue.self, from: Data(created.stdout.utf8))["id"]?.stringValue)
    }

    // Without -i the command reads /dev/null: sha256sum prints the empty input's sum.
    @Test("exec -i pipes stdin through, and its end is the command's EOF")
    func execInteractive() async throws {
        try await ServiceFixture.with { service in
            try await service.start()
            let id = try await Self.sandbox(service)
            let piped = try await service.local(["exec", "-i", id, "--", "sha256sum"], stdin: "hello\n")
            #expect(piped.status == 0, "\(piped.stderr)")
            #expect(piped.stdout.hasPrefix("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"))
            let counted = try await service.local(["exec", "-i", id, "--", "wc", "-l"], stdin: "a\nb\nc\n")
            #expect(counted.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "3", "\(counted.stderr)")
            // -t without a terminal on our side falls back, and says so.
            let fallback = try await service.local(["exec", "-it", id, "--", "cat"], stdin: "plain\n")
            #expect(fallback.status == 0 && fallback.stdout == "plain\n", "\(fallback.stderr)")
            #expect(fallback.stderr.contains("no terminal on this side"))
        }
    }

    // Without --detach the command dies with its caller; without attach, ps and kill it can
    // be neither followed, found nor stopped.
    @Test("exec --detach prints an id; attach follows it, ps lists it, kill stops it")
    func detachAttachPsKill() async throws {
        try await ServiceFixture.with { service in
            try await service.start()
            let id = try await Self.sandbox(service)
            let started = try await service.local([
                "exec", "--detach", id, "--", "sh", "-c", "echo one; echo two; exec sleep 1000",
            ])
            #expect(started.status == 0, "\(started.stderr)")
            let command = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(command.hasPrefix("cm-") && command.count == 15, "\(started.stdout)")

            let follower = try service.localBackground(["attach", id, command])
            try await onOwnThread { try follower.waitForLine("two") { $0 == "two" } }
            #expect(follower.lines == ["one", "two"])
            follower.kill()

            let listed = try await service.local(["ps", id])
            let row = try #require(
                listed.stdout.split(separator: "\n").first { $0.hasPrefix(command) }, "\(listed.stdout)")
            #expect(row.contains("running") && row.contains("sleep 1000"), "\(row)")
            let json = try await service.local(["ps", id, "--json"])
            let commands = try JSONDecoder().decode([JSONValue].self, from: Data(json.stdout.utf8))
            #expect(commands.contains { $0["id"]?.stringValue == command && $0["state"]?.stringValue == "running" })

            let resumed = try service.localBackground(["attach", "--from", "4", id, command])
            try await onOwnThread { try resumed.waitForLine("two") { $0 == "two" } }
            #expect(resumed.lines == ["two"], "from offset 4 (after \"one\\n\")")

            let killed = try await service.local(["kill", id, command, "KILL"])
            #expect(killed.status == 0, "\(killed.stderr)")
            let ended = try await onOwnThread { try resumed.waitForExit() }
            #expect(ended.status == 137, "\(ended.stderr)")
            let after = try await service.local(["ps", id, "--json"])
            let states = try JSONDecoder().decode([JSONValue].self, from: Data(after.stdout.utf8))
            #expect(states.contains { $0["id"]?.stringValue == command && $0["state"]?.stringValue == "exited" })

            let unknown = try await service.local(["attach", id, "cm-000000000000"])
            #expect(unknown.status != 0 && unknown.stderr.contains("no command"), "\(unknown.stderr)")
            let finished = try await service.local(["attach", id, command])
            #expect(finished.status != 0 && !finished.stderr.contains("no command"), "\(finished.stderr)")
        }
    }

    // Without adoption of the sandbox's control connection by the new service, ps would list
    // nothing and attach would find no command; without the output ring in corral-init (not
    // in the service), "before" would be lost with the killed service.
    @Test(
        "a detached command outlives its service killed with SIGKILL; the next service lists it, and attach has all of it"
    )
    func detachedOutlivesService() async throws {
        try await ServiceFixture.with { service in
            try await service.start()
            let id = try await Self.sandbox(service)
            let started = try await service.local([
                "exec", "--detach", id, "--", "sh", "-c",
                "echo before; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo after; exec sleep 1000",
            ])
            #expect(started.status == 0, "\(started.stderr)")
            let command = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)

            service.kill()
            try await service.start()
            let listed = try await service.local(["ps", id, "--json"])
            #expect(listed.status == 0, "\(listed.stderr)")
            let commands = try JSONDecoder().decode([JSONValue].self, from: Data(listed.stdout.utf8))
            #expect(
                commands.contains { $0["id"]?.stringValue == command && $0["state"]?.stringValue == "running" },
                "\(listed.stdout)")

            let follower = try service.localBackground(["attach", id, command])
            defer { follower.kill() }
            try await onOwnThread { try follower.waitForLine("before") { $0 == "before" } }
            let go = try await service.local(["exec", id, "--", "touch", "/tmp/go"])
            #expect(go.status == 0, "\(go.stderr)")
            try await onOwnThread { try follower.waitForLine("after") { $0 == "after" } }
            #expect(follower.lines == ["before", "after"])

            let killed = try await service.local(["kill", id, command, "KILL"])
            #expect(killed.status == 0, "\(killed.stderr)")
            let ended = try await onOwnThread { try follower.waitForExit() }
            #expect(ended.status == 137, "\(ended.stderr)")
        }
    }

    // Without the control connection under cp, /tmp (a tmpfs) is out of the engine's sight.
    @Test("cp to /tmp and HOME in the sandbox and back")
    func copyTmpfs() async throws {
        try await ServiceFixture.with { service in
            try await service.start()
            let id = try await Self.sandbox(service)
            try await withTemporaryDirectory { directory in
                let source = directory.appendingPathComponent("payload.txt")
                let contents = String(repeating: "corral tmpfs copy\n", count: 5000)
                try Data(contents.utf8).write(to: source)
                for target in ["/tmp/payload.txt", "/home/agent/payload.txt"] {
                    let inward = try await service.local(["cp", source.path, "\(id):\(target)"])
                    #expect(inward.status == 0, "\(inward.stderr)")
                    let back = directory.appendingPathComponent("back-\(target.count).txt")
                    let outward = try await service.local(["cp", "\(id):\(target)", back.path])
                    #expect(outward.status == 0, "\(outward.stderr)")
                    #expect(try String(contentsOf: back, encoding: .utf8) == contents, "\(target)")
                }
            }
        }
    }

    // No service holds the sandbox's control connection: the command line's own library adopts
    // the sandbox for what needs it (with the key its maker kept). Before adoption on demand,
    // this was refused ("needs its control connection, which this process does not hold").
    @Test("without a service, exec -i adopts the sandbox's control connection and pipes stdin through")
    func embeddedAdoption() async throws {
        try await ServiceFixture.with { service in
            let created = try await service.embedded(["sandbox", "create", "--json"])
            #expect(created.status == 0, "\(created.stderr)")
            let id = try #require(
                try JSONDecoder().decode(JSONValue.self, from: Data(created.stdout.utf8))["id"]?.stringValue)
            let piped = try await service.embedded(["exec", "-i", id, "--", "cat"], stdin: "through\n")
            #expect(piped.status == 0, "\(piped.stderr)")
            #expect(piped.stdout == "through\n")
            let again = try await service.embedded(["exec", "-i", id, "--", "wc", "-c"], stdin: "12345")
            #expect(
                again.status == 0 && again.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "5", "\(again)")
            _ = try await service.embedded(["sandbox", "rm", id])
        }
    }

    static let tmux = "/usr/bin/tmux"
    static var tmuxRequired: Bool {
        FileManager.default.isExecutableFile(atPath: tmux) || TestEnvironment.engineRequired
    }

    // Without -t python3 sees a pipe (no prompt, no size); without resizes the size stays the
    // first; without restoring, the shell is left in raw mode (`-icanon -echo`).
    @Test(
        "exec -it under tmux: python3's REPL answers, a resize reaches it, and the terminal is restored",
        .enabled(if: tmuxRequired, "tmux is not installed (scripts/deps.sh installs it)"))
    func terminalUnderTmux() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.tmux), "tmux is missing: run scripts/deps.sh")
        try await ServiceFixture.with { service in
            try await service.start()
            let id = try await Self.sandbox(service)
            let socket = FileManager.default.temporaryDirectory.appendingPathComponent(
                "corral-tmux-\(UUID().uuidString.prefix(8)).sock"
            ).path
            var environment = service.clientEnvironment(state: service.state, token: nil)
            environment["TERM"] = "xterm-256color"
            environment["PS1"] = "$ "
            let tmux = TmuxSession(socket: socket, environment: environment)
            defer { tmux.kill() }
            try await onOwnThread { try tmux.run(["new-session", "-d", "-s", "t", "-x", "100", "-y", "30"]) }
            try await onOwnThread {
                try tmux.run([
                    "send-keys", "-t", "t", "\(BuiltProducts.path("corral")) exec -it \(id) -- python3", "Enter",
                ])
            }
            try await tmux.waitForPane("python's prompt") { $0.contains("\n>>>") }
            try await onOwnThread { try tmux.run(["send-keys", "-t", "t", "print(6*7)", "Enter"]) }
            try await tmux.waitForPane("42") { $0.split(separator: "\n").contains { $0 == "42" } }
            try await onOwnThread { try tmux.run(["resize-window", "-t", "t", "-x", "120", "-y", "40"]) }
            try await Task.sleep(for: .milliseconds(500))
            try await onOwnThread {
                try tmux.run(["send-keys", "-t", "t", "import shutil; print(shutil.get_terminal_size())", "Enter"])
            }
            try await tmux.waitForPane("the new size") { $0.contains("columns=120, lines=40") }
            try await onOwnThread { try tmux.run(["send-keys", "-t", "t", "exit()", "Enter"]) }
            try await Task.sleep(for: .milliseconds(500))
            try await onOwnThread {
                try tmux.run([
                    "send-keys", "-t", "t",
                    "clear; stty -a | tr ';' '\\n' | tr ' ' '\\n' | grep -x -e icanon -e -icanon -e echo -e -echo; echo done-$((6*7))",
                    "Enter",
                ])
            }
            let pane = try await tmux.waitForPane("the shell's answer") { $0.contains("done-42") }
            let words = pane.split(whereSeparator: \.isWhitespace)
            #expect(words.contains("icanon") && words.contains("echo"), "\(pane)")
            #expect(!words.contains("-icanon") && !words.contains("-echo"), "\(pane)")
        }
    }
}

/// A tmux server on a socket of its own.
struct TmuxSession: Sendable {
    let socket: String
    let environment: [String: String]

    /// Runs tmux with posix_spawn and waitpid: Foundation's Process loses track of a child
    /// that forks a daemon (tmux's server) and leaves it a zombie, waiting for ever.
    @discardableResult
    func run(_ arguments: [String]) throws -> String {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-tmux-\(UUID().uuidString.prefix(8)).out")
        defer { try? FileManager.default.removeItem(at: output) }
        var environment = ProcessInfo.processInfo.environment.merging(self.environment) { _, new in new }
        environment["TMUX"] = nil
        let argv = [InteractiveCLITests.tmux, "-S", socket, "-f", "/dev/null"] + arguments
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output.path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let cArguments = argv.map { strdup($0) } + [nil]
        let cEnvironment = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in cArguments { free(pointer) }
            for pointer in cEnvironment { free(pointer) }
        }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, InteractiveCLITests.tmux, &actions, nil, cArguments, cEnvironment)
        guard spawned == 0 else {
            throw WaitFailure(description: "cannot start tmux: \(String(cString: strerror(spawned)))")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw WaitFailure(description: "tmux \(arguments.joined(separator: " ")) failed (\(status)): \(text)")
        }
        return text
    }

    func pane() throws -> String { try run(["capture-pane", "-p", "-t", "t"]) }

    @discardableResult
    func waitForPane(_ what: String, seconds: Double = 60, _ match: @escaping @Sendable (String) -> Bool)
        async throws -> String
    {
        let deadline = ContinuousClock.now + .seconds(seconds)
        var last = ""
        while ContinuousClock.now < deadline {
            last = try await onOwnThread { try pane() }
            if match(last) { return last }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw WaitFailure(description: "the pane never showed \(what); it shows:\n\(last)")
    }

    func kill() {
        // The server by its pid too: kill-server alone has left servers behind here.
        let server = (try? run(["display-message", "-p", "#{pid}"])).flatMap {
            Int32($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        _ = try? run(["kill-server"])
        if let server, server > 1 { Glibc.kill(server, SIGKILL) }
        try? FileManager.default.removeItem(atPath: socket)
    }
}
