import CorralCore
import Foundation
import Testing

/// A PostgreSQL of the test's own (scripts/postgres.sh with its own directory and port), so
/// that stopping it does not disturb the other tests' database. Its calls block: run them on
/// a thread of their own.
public final class PrivateCluster: Sendable {
    public let home: String
    public let port: Int
    let script = TestEnvironment.repositoryRoot.appendingPathComponent("scripts/postgres.sh").path

    public init() throws {
        home = "/var/lib/corral-postgres-tests/c-\(UInt32.random(in: 0...UInt32.max))"
        port = try #require((56000..<57000).shuffled().first { !TestEnvironment.tcpPortAccepts(port: $0) })
    }

    /// Runs the script (up, down, env) with this cluster's directory and port.
    @discardableResult
    public func run(_ command: String) throws -> String {
        let output = try ChildProcess.run(
            script, [command],
            environment: ProcessInfo.processInfo.environment.merging([
                "CORRAL_POSTGRES_HOME": home, "CORRAL_POSTGRES_PORT": String(port),
            ]) { _, new in new })
        guard output.termination.succeeded else {
            throw CorralError(.internalError, "postgres.sh \(command) failed: \(output.reason)")
        }
        return String(decoding: output.stdout, as: UTF8.self)
    }

    /// The cluster's postgres:// URL, password included.
    public func urlText() throws -> String {
        let line = try run("env").trimmingCharacters(in: .whitespacesAndNewlines)
        guard let start = line.range(of: "postgres://") else {
            throw CorralError(.internalError, "postgres.sh env printed no URL")
        }
        return String(line[start.lowerBound...]).trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
    }

    public func remove() {
        _ = try? run("down")
        try? FileManager.default.removeItem(atPath: home)
    }
}
