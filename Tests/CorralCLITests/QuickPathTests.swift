import ArgumentParser
import TestSupport
import Testing

@testable import CorralCLI

/// The quick path reads the plain forms of `corral exec` and `corral sandbox create` without
/// ArgumentParser. Whatever it accepts, ArgumentParser must read the same way; whatever it
/// does not, ArgumentParser gets.
@Suite("The command line's quick path")
struct QuickPathTests {
    /// What ArgumentParser makes of `arguments`, as `corral` runs it; nil when it is not an
    /// exec or does not parse.
    static func parsed(_ arguments: [String]) -> ExecInvocation? {
        guard let command = try? CorralCommand.parseAsRoot(CorralCommand.hoistingGlobalOptions(arguments)) else {
            return nil
        }
        return (command as? ExecCommand)?.invocation
    }

    /// A create's options as ArgumentParser reads them, or as the quick path does.
    static func created(_ arguments: [String]) -> [String?]? {
        guard let command = try? CorralCommand.parseAsRoot(CorralCommand.hoistingGlobalOptions(arguments)) else {
            return nil
        }
        return (command as? SandboxCreate).map(Self.summary)
    }

    static func summary(_ create: SandboxCreate) -> [String?] {
        create.global.values + create.options.values + ["\(create.json)"]
    }

    static let plainForms: [[String]] = [
        ["exec", "sb-1", "--", "true"],
        ["exec", "sb-1", "--", "sh", "-c", "echo -- -x --help"],
        ["exec", "-i", "sb-1", "--", "cat"],
        ["exec", "-it", "sb-1", "--", "bash"],
        ["exec", "-ti", "--detach", "sb-1", "--", "bash", "-l"],
        ["exec", "--interactive", "--tty", "-d", "sb-1", "--", "top"],
        ["exec", "--env", "A=1", "--env=B=2", "sb-1", "--", "env"],
        ["exec", "sb-1", "--workdir", "/tmp", "--timeout=5s", "--", "ls"],
        ["exec", "--timeout", "1m", "sb-1", "--env", "X=", "--", "ls"],
        ["--state-dir", "/s", "exec", "sb-1", "--", "true"],
        ["--server=http://127.0.0.1:1", "exec", "--engine", "unix:///x", "sb-1", "--", "true"],
        ["exec", "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c", "sb-1", "--", "x"],
        ["--state-dir", "exec", "exec", "exec", "--", "exec"],
    ]

    /// Left to ArgumentParser: help, usage errors, and forms the quick path does not read.
    static let otherForms: [[String]] = [
        ["exec", "--help"],
        ["exec", "-h", "sb-1", "--", "x"],
        ["exec", "sb-1"],
        ["exec", "sb-1", "--"],
        ["exec", "--", "sb-1", "x"],
        ["exec", "--timeout", "sb-1", "--", "x"],
        ["exec", "sb-1", "--bogus", "--", "x"],
        ["exec", "-x", "sb-1", "--", "x"],
        ["exec", "-", "sb-1", "--", "x"],
        ["exec", "--workdir", "/a", "--workdir", "/b", "sb-1", "--", "x"],
        ["exec", "-i", "-i", "sb-1", "--", "x"],
        ["exec", "a", "b", "--", "x"],
        ["exec", "--env", "-x", "sb-1", "--", "y"],
        ["exec", "--env=", "sb-1", "--", "y"],
        ["--bogus", "exec", "sb-1", "--", "x"],
        ["sandbox", "ls"],
        ["exec"],
        [],
    ]

    @Test("the plain forms are read as ArgumentParser reads them")
    func plainForms() {
        for arguments in Self.plainForms {
            let quick = QuickPath.exec(arguments)
            #expect(quick != nil, "the quick path refused \(arguments)")
            #expect(quick == Self.parsed(arguments), "\(arguments)")
        }
    }

    @Test("help, usage errors and other forms are left to ArgumentParser")
    func otherForms() {
        // `exec ID -- --help` is a plain form: the command's own --help.
        #expect(QuickPath.exec(["exec", "sb-1", "--", "--help"]) == Self.parsed(["exec", "sb-1", "--", "--help"]))
        for arguments in Self.otherForms {
            #expect(QuickPath.exec(arguments) == nil, "the quick path took \(arguments)")
        }
    }

    @Test("sandbox create: its plain forms are read as ArgumentParser reads them, the rest is left to it")
    func sandboxCreate() {
        let plain: [[String]] = [
            ["sandbox", "create"],
            ["sandbox", "create", "--template", "py"],
            ["--state-dir", "/s", "sandbox", "create", "--template=py", "--json"],
            [
                "sandbox", "create", "--image", "img", "--runtime", "runsc", "--memory=1g", "--cpus", "2", "--pids",
                "64", "--disk", "1g", "--ttl", "1h", "--idle-ttl", "5m", "--label", "a=1", "--label=b=2", "--env",
                "E=1", "--repo", "h/o/r", "--ref", "main", "--branch", "b", "--write", "--allow-host", "x.test",
                "--allow-host=*.y.test", "--config", "/c.toml", "--server", "http://127.0.0.1:1",
            ],
        ]
        for arguments in plain {
            let quick = QuickPath.sandboxCreate(arguments)
            #expect(quick != nil, "the quick path refused \(arguments)")
            #expect(quick.map(Self.summary) == Self.created(arguments), "\(arguments)")
        }
        let other: [[String]] = [
            ["sandbox", "create", "--help"], ["sandbox", "create", "extra"], ["sandbox", "create", "--json=1"],
            ["sandbox", "create", "--template", "a", "--template", "b"], ["sandbox", "create", "-t", "x"],
            ["sandbox", "create", "--", "x"], ["sandbox", "ls"], ["sandbox"], ["create"],
            ["sandbox", "create", "--write", "--write"], ["sandbox", "create", "--label"],
        ]
        for arguments in other {
            #expect(QuickPath.sandboxCreate(arguments) == nil, "the quick path took \(arguments)")
        }
    }

    @Test("random argument vectors: whatever the quick path reads, ArgumentParser reads the same")
    func randomVectors() {
        let words = [
            "exec", "sb-1", "sb-2", "--", "-i", "-t", "-d", "-it", "-dit", "-x", "-", "--interactive", "--tty",
            "--detach", "--env", "A=1", "--env=B=2", "--env=", "--workdir", "/tmp", "--workdir=/w", "--timeout",
            "5s", "--timeout=1m", "--state-dir", "/s", "--state-dir=/t", "--server", "http://127.0.0.1:1",
            "--engine=unix:///e", "--tls-ca", "ca.pem", "--help", "-h", "--bogus", "true", "ls", "--tls-key=k", "sb-3",
            "sandbox", "create", "--template", "py", "--json", "--write", "--label=a=1", "--memory", "1g",
        ]
        var generator = SeededGenerator(seed: 20261207)
        var (execs, creates) = (0, 0)
        for round in 0..<4000 {
            func some(_ most: Int) -> [String] {
                (0..<Int.random(in: 0...most, using: &generator)).map { _ in words.randomElement(using: &generator)! }
            }
            let exec = round.isMultiple(of: 2)
            var arguments = some(2) + (exec ? ["exec"] : ["sandbox", "create"]) + some(4)
            // Most execs end as the plain form does: `--` and a command.
            if exec, Int.random(in: 0..<10, using: &generator) < 7 { arguments += ["--"] + some(2) }
            if let quick = QuickPath.exec(arguments) {
                execs += 1
                #expect(quick == Self.parsed(arguments), "\(arguments)")
            }
            if let quick = QuickPath.sandboxCreate(arguments) {
                creates += 1
                #expect(Self.summary(quick) == Self.created(arguments), "\(arguments)")
            }
        }
        // The vectors reach the quick path often enough to say something.
        #expect(execs > 30 && creates > 100, "the quick path took \(execs) execs and \(creates) creates")
    }
}
