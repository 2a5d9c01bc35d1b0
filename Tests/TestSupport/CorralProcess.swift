import CorralCore
import Foundation

/// Runs the built `corral` binary (or another product) as a subprocess.
public struct ProcessResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

public enum BuiltProducts {
    /// The directory holding the build products: the test bundle's own directory.
    public static var directory: URL {
        let executable = URL(
            fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                ?? CommandLine.arguments[0])
        var directory = executable.deletingLastPathComponent()
        // corralPackageTests.xctest is itself a file in the products directory on Linux.
        if directory.lastPathComponent.hasSuffix(".xctest") { directory = directory.deletingLastPathComponent() }
        return directory
    }

    public static func path(_ product: String) -> String {
        directory.appendingPathComponent(product).path
    }
}

/// The environment a test's `corral` runs with: the test's own, then `overrides`. Commands
/// drive the engine themselves (CORRAL_AGENT=0) unless a test asks for the host agent: a test
/// of embedded behaviour must not find it went through an agent that outlives the test.
public func commandEnvironment(_ overrides: [String: String]) -> [String: String] {
    var environment = ProcessInfo.processInfo.environment
    environment["CORRAL_AGENT"] = "0"
    environment.merge(overrides) { _, new in new }
    return environment
}

/// Runs `corral` with `arguments`, feeding `stdin`, and collects its output, waiting on a
/// thread of its own: a command can take tens of seconds on a loaded machine, and a test that
/// waited on one of the few cooperative threads would starve every server the other tests run
/// in process (seen: in-process corrald answering nothing for 30 s).
public func runCorral(
    _ arguments: [String], environment: [String: String] = [:], stdin: Data? = nil, product: String = "corral",
    executable: String? = nil
) async throws -> ProcessResult {
    try await runOnThread {
        try runCorralBlocking(
            arguments, environment: environment, stdin: stdin, product: product, executable: executable)
    }
}

/// `runCorral` for code that is already on a thread of its own.
public func runCorralBlocking(
    _ arguments: [String], environment: [String: String] = [:], stdin: Data? = nil, product: String = "corral",
    executable: String? = nil
) throws -> ProcessResult {
    let output = try ChildProcess.run(
        executable ?? BuiltProducts.path(product), arguments, environment: commandEnvironment(environment),
        stdin: stdin ?? Data())
    return ProcessResult(
        status: output.status, stdout: String(decoding: output.stdout, as: UTF8.self),
        stderr: String(decoding: output.stderr, as: UTF8.self))
}

/// Reads a descriptor to its end (blocking).
public func readToEnd(_ fd: Int32) -> Data {
    var data = Data()
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let count = read(fd, &buffer, buffer.count)
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { return data }
        data.append(contentsOf: buffer[0..<count])
    }
}
