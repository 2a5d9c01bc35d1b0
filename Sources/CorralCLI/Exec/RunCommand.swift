import ArgumentParser
import CorralCore
import CorralSandbox
import Foundation

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "A disposable workspace: create a sandbox, run one command, always remove it.",
        discussion: """
            Exits with the command's status (124 when it timed out). The sandbox is removed \
            however the command ends, on Ctrl-C and SIGTERM too; should corral itself be \
            killed, the sandbox's ttl (default: the timeout plus 10 minutes, or 1 hour) lets \
            the reaper remove it.
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: SandboxCreateOptions
    @OptionGroup var command: CommandOptions

    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.")
    var arguments: [String] = []

    func validate() throws {
        guard !arguments.isEmpty else {
            throw ValidationError("give the command after --, such as: corral run -- make test")
        }
    }

    func run() async throws {
        var request = try options.request()
        let sandboxCommand = try command.command(arguments)
        if request.ttl == nil {
            request.ttl = (sandboxCommand.timeout ?? .seconds(3000)) + .seconds(600)
        }
        let backend = try await CommandContext(global).backend(config: options.config)
        defer { backend.shutdown() }
        let status = try await SignalCancellation.run { [request] in
            let sandbox = try await backend.create(request).id
            do {
                let status = try await streamCommand(sandboxCommand, in: sandbox, backend: backend)
                await Self.removeUncancellably(sandbox, backend: backend)
                return status
            } catch {
                await Self.removeUncancellably(sandbox, backend: backend)
                throw error
            }
        }
        throw ExitCode(status)
    }

    static func removeUncancellably(_ sandbox: SandboxID, backend: any SandboxBackend) async {
        await Task.detached {
            do {
                try await backend.remove(sandbox)
            } catch {
                CLIOutput.printError(CorralError(.engine, "could not remove sandbox \(sandbox): \(error)"))
            }
        }.value
    }
}

/// Runs `body` in a task that SIGINT and SIGTERM cancel, so cleanup in `body` still runs.
enum SignalCancellation {
    static func run<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let task = Task { try await body() }
        var sources: [DispatchSourceSignal] = []
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { task.cancel() }
            source.resume()
            sources.append(source)
        }
        defer { sources.forEach { $0.cancel() } }
        do {
            return try await task.value
        } catch {
            if task.isCancelled { throw ExitCode(130) }
            throw error
        }
    }
}
