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

/// Runs `corral` with `arguments`, feeding `stdin`, and collects its output.
public func runCorral(
    _ arguments: [String], environment: [String: String] = [:], stdin: Data? = nil, product: String = "corral",
    executable: String? = nil
) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable ?? BuiltProducts.path(product))
    process.arguments = arguments
    process.environment = commandEnvironment(environment)
    let out = Pipe()
    let err = Pipe()
    let input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(stdin) }
    try input.fileHandleForWriting.close()
    // Read both pipes while the process runs, so a full pipe cannot stall it.
    let stdoutData = Locked(Data())
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        stdoutData.value = out.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let stderrData = err.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    return ProcessResult(
        status: process.terminationStatus, stdout: String(decoding: stdoutData.value, as: UTF8.self),
        stderr: String(decoding: stderrData, as: UTF8.self))
}

final class Locked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: T
    init(_ value: T) { stored = value }
    var value: T {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}
