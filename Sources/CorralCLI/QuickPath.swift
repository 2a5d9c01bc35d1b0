import CorralCore

/// The command line's quick path: the plain forms of `corral exec` and `corral sandbox
/// create`, read without ArgumentParser.
///
/// ArgumentParser reads a command's options by reflection, and each generic type it makes at
/// run time costs the Swift runtime a scan of every protocol conformance in the binary (about
/// 11,500 in this one). Measured here, that is 3 to 4 ms of CPU in a `corral exec` through a
/// service that otherwise costs about 7: the quick path takes it off every CI job's command.
///
/// It takes an argument vector only when it knows every word in it: the command's words, its
/// own options and flags, the global options (before or after the command's words), its
/// positionals, and for exec `--` with the command after it. Anything else (help, an unknown
/// or repeated option, a value that looks like an option, a missing `--` or command, an
/// alias) goes to ArgumentParser, which parses it and gives every usage error, as before.
/// `QuickPathTests` parses a corpus and random vectors both ways and requires the same result.
enum QuickPath {
    /// `corral exec`, when `arguments` (without the program's name) is a form read here.
    static func exec(_ arguments: [String]) -> ExecInvocation? {
        guard let reading = read(arguments, exec), let id = reading.positionals.first, let command = reading.command
        else { return nil }
        return ExecInvocation(
            global: reading.global, workdir: reading.values["--workdir"], timeout: reading.values["--timeout"],
            environment: reading.lists["--env"] ?? [], interactive: reading.flags.contains("--interactive"),
            tty: reading.flags.contains("--tty"), detach: reading.flags.contains("--detach"), id: id,
            arguments: command)
    }

    /// `corral sandbox create`, when `arguments` is a form read here.
    static func sandboxCreate(_ arguments: [String]) -> SandboxCreate? {
        guard let reading = read(arguments, sandboxCreate) else { return nil }
        var create = SandboxCreate()
        create.global = reading.global
        create.options = SandboxCreateOptions(values: reading.values, lists: reading.lists, flags: reading.flags)
        create.json = reading.flags.contains("--json")
        return create
    }

    /// What one command accepts.
    struct Grammar {
        /// The command's words, such as `sandbox create`.
        var words: [String]
        /// Options that take one value, by long name.
        var values: Set<String> = []
        /// Options that may be given again, each time with a value.
        var lists: Set<String> = []
        /// Flags by long name, and the short letters that stand for some of them.
        var flags: Set<String> = []
        var shortFlags: [Character: String] = [:]
        var positionals = 0
        /// Whether `--` and a command after it are required.
        var command = false
    }

    static let exec = Grammar(
        words: ["exec"], values: ["--workdir", "--timeout"], lists: ["--env"],
        flags: ["--interactive", "--tty", "--detach"],
        shortFlags: ["i": "--interactive", "t": "--tty", "d": "--detach"], positionals: 1, command: true)

    static let sandboxCreate = Grammar(
        words: ["sandbox", "create"],
        values: [
            "--template", "--config", "--image", "--runtime", "--memory", "--cpus", "--pids", "--disk", "--ttl",
            "--idle-ttl", "--repo", "--ref", "--branch",
        ],
        lists: ["--label", "--env", "--allow-host"], flags: ["--write", "--json"])

    struct Reading {
        var values: [String: String] = [:]
        var lists: [String: [String]] = [:]
        var flags: Set<String> = []
        var positionals: [String] = []
        /// What came after `--`.
        var command: [String]?

        var global: GlobalOptions {
            GlobalOptions(
                engine: values["--engine"], tlsCA: values["--tls-ca"], tlsCert: values["--tls-cert"],
                tlsKey: values["--tls-key"], server: values["--server"], stateDir: values["--state-dir"])
        }
    }

    private static let globalOptions = Set(CorralCommand.globalOptions.keys)

    /// Reads `arguments` by `grammar`; nil at the first word it does not know.
    static func read(_ arguments: [String], _ grammar: Grammar) -> Reading? {
        var words = arguments[...]
        var reading = Reading()
        // Global options may come before the command's words (`corral --state-dir D exec ...`).
        while let first = words.first, first != grammar.words.first {
            guard readValue(&words, into: &reading, known: globalOptions) else { return nil }
        }
        for word in grammar.words {
            guard words.popFirst() == word else { return nil }
        }
        let values = globalOptions.union(grammar.values)
        while let word = words.first, word != "--" {
            if word.hasPrefix("--") {
                let name = String(word.prefix { $0 != "=" })
                if grammar.flags.contains(name) {
                    guard name == word, reading.flags.insert(name).inserted else { return nil }
                    words.removeFirst()
                } else if grammar.lists.contains(name) {
                    guard let value = readPair(&words) else { return nil }
                    reading.lists[name, default: []].append(value.1)
                } else {
                    guard readValue(&words, into: &reading, known: values) else { return nil }
                }
            } else if word.hasPrefix("-") {
                // Short flags, alone or together (-i, -it).
                let letters = word.dropFirst()
                guard !letters.isEmpty else { return nil }
                for letter in letters {
                    guard let flag = grammar.shortFlags[letter], reading.flags.insert(flag).inserted else { return nil }
                }
                words.removeFirst()
            } else {
                guard reading.positionals.count < grammar.positionals else { return nil }
                reading.positionals.append(word)
                words.removeFirst()
            }
        }
        guard reading.positionals.count == grammar.positionals else { return nil }
        if grammar.command {
            guard words.popFirst() == "--", !words.isEmpty else { return nil }
            reading.command = Array(words)
        } else if !words.isEmpty {
            return nil
        }
        return reading
    }

    /// Reads a known single-valued option not given before.
    private static func readValue(
        _ words: inout ArraySlice<String>, into reading: inout Reading, known: Set<String>
    ) -> Bool {
        guard let (name, value) = readPair(&words), known.contains(name), reading.values[name] == nil else {
            return false
        }
        reading.values[name] = value
        return true
    }

    /// Reads `--name value` or `--name=value`; nil when there is no value, it is empty
    /// (ArgumentParser refuses `--env=`), or it looks like an option.
    private static func readPair(_ words: inout ArraySlice<String>) -> (String, String)? {
        guard let word = words.popFirst(), word.hasPrefix("--") else { return nil }
        if let equals = word.firstIndex(of: "=") {
            let value = word[word.index(after: equals)...]
            return value.isEmpty ? nil : (String(word[..<equals]), String(value))
        }
        guard let next = words.popFirst(), !next.hasPrefix("-") else { return nil }
        return (word, next)
    }
}
