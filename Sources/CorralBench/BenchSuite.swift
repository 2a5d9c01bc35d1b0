import Foundation

/// Settings every suite reads.
public struct BenchContext: Sendable {
    /// Repetitions per measured operation (suites may use more where an issue asks).
    public var runs: Int
    /// Scratch directory on the disk being measured; suites clean up what they make.
    public var scratch: URL
    public var engineEndpoint: String
    public var image: String
    /// Smaller data sets, for a quick check that the suite works.
    public var quick: Bool

    public init(runs: Int, scratch: URL, engineEndpoint: String, image: String, quick: Bool) {
        self.runs = runs
        self.scratch = scratch
        self.engineEndpoint = engineEndpoint
        self.image = image
        self.quick = quick
    }
}

public protocol BenchSuite: Sendable {
    static var name: String { get }
    static var summary: String { get }
    init()
    func run(_ context: BenchContext) async throws -> SuiteReport
}

/// Every suite `corral-bench` knows, in the order `make bench` runs them.
let allSuites: [any BenchSuite.Type] = [
    SandboxSuite.self, ProvisionSuite.self, SessionSuite.self, HarnessSuite.self, WorkspaceSuite.self, APISuite.self,
    CLISuite.self, WorkerSuite.self, FleetSuite.self, ReplicaSuite.self,
]
