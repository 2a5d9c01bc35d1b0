import ArgumentParser
import Foundation

/// `corral-bench`: runs benchmark suites and prints medians and p95s of corral beside the
/// peers measured in the same run. With `--json FILE`, writes one JSON object per suite
/// (one per line).
public struct BenchCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "corral-bench",
        abstract: "Measure corral beside its peers, in one run, on this machine."
    )

    @Option(
        name: .long, parsing: .upToNextOption,
        help: "Suites to run (default: all). Known: \(allSuites.map { $0.name }.joined(separator: ", ")).")
    var suite: [String] = []

    @Option(name: .long, help: "Write one JSON object per suite to this file.")
    var json: String?

    @Option(name: .long, help: "Repetitions per measured operation.")
    var runs: Int = 30

    @Option(name: .long, help: "Scratch directory on the disk to measure.")
    var scratch: String?

    @Option(name: .long, help: "Engine endpoint (env CORRAL_ENGINE).")
    var engine: String?

    @Option(name: .long, help: "Sandbox image.")
    var image: String = "corral/base:bookworm"

    @Flag(name: .long, help: "Small data sets: checks that the suites work, not how fast.")
    var quick = false

    public init() {}

    /// Parses the arguments and runs; ArgumentParser's own `main()` cannot pick the async
    /// entry point on Linux without an availability annotation.
    public static func runAndExit() async -> Never {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            exit(withError: nil)
        } catch {
            exit(withError: error)
        }
    }

    public func run() async throws {
        let selected =
            suite.isEmpty
            ? allSuites
            : try suite.map { name in
                guard let found = allSuites.first(where: { $0.name == name }) else {
                    throw ValidationError(
                        "unknown suite '\(name)'; known: \(allSuites.map { $0.name }.joined(separator: ", "))")
                }
                return found
            }
        let scratchURL = URL(fileURLWithPath: scratch ?? NSTemporaryDirectory())
            .appendingPathComponent("corral-bench-\(getpid())", isDirectory: true)
        try FileManager.default.createDirectory(at: scratchURL, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratchURL) }
        let context = BenchContext(
            runs: runs, scratch: scratchURL,
            engineEndpoint: engine ?? ProcessInfo.processInfo.environment["CORRAL_ENGINE"]
                ?? "unix:///var/run/docker.sock",
            image: image, quick: quick)
        var output = ""
        var failures: [String] = []
        for suiteType in selected {
            print("running suite \(suiteType.name): \(suiteType.summary)")
            do {
                let report = try await suiteType.init().run(context)
                print(report.renderTable())
                print("")
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                encoder.dateEncodingStrategy = .iso8601
                output += String(decoding: try encoder.encode(report), as: UTF8.self) + "\n"
            } catch {
                failures.append("\(suiteType.name): \(error)")
                print("suite \(suiteType.name) failed: \(error)\n")
            }
        }
        if let json {
            try output.write(toFile: json, atomically: true, encoding: .utf8)
            print("wrote \(json)")
        }
        if !failures.isEmpty {
            throw ValidationError("\(failures.count) suite(s) failed: \(failures.joined(separator: "; "))")
        }
    }
}
