import CorralCore
import DockerEngine
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import CorralSandbox

@Suite("The reaper and sandboxes still being made", .engine)
struct ProvisioningReaperTests {
    @Test("a cold provision whose setup outlasts the claim grace is not reaped while it is being made")
    func longSetupSurvivesSweeps() async throws {
        // The setup takes longer than the grace: without the provisioner keeping the sandbox's
        // directory fresh, a sweep in the middle would take the record-less container for an
        // orphan.
        let template = PoolFixture.template(minIdle: 0) { $0.setup = ["sleep 4"] }
        try await withPoolFixture(templates: [template], claimGrace: .seconds(2)) { fixture in
            let provisioner = fixture.provisioner
            let reaper = SandboxReaper(provisioner: provisioner)
            let done = Flag()
            let request = fixture.request(template)
            let provisioning = Task {
                defer { done.set() }
                return try await provisioner.provision(request)
            }
            var sweepsPastGrace = 0
            var removed: [SandboxID: String] = [:]
            let clock = ContinuousClock()
            let started = clock.now
            // Sweeps, a quarter second apart, for as long as the provisioning runs.
            while !done.isSet {
                removed.merge(try await reaper.sweep().removed) { first, _ in first }
                if clock.now - started > .seconds(2) && !done.isSet { sweepsPastGrace += 1 }
                try await Task.sleep(for: .milliseconds(250))
            }
            let sandbox = try await provisioning.value
            #expect(removed.isEmpty, "swept during provisioning: \(removed)")
            #expect(sweepsPastGrace >= 2, "sweeps ran past the grace while the setup ran (\(sweepsPastGrace))")
            #expect(try await sandbox.info().state == "running")
            // Once made, it has a record and is left alone; without one, it would be an orphan.
            #expect(try await reaper.sweep().removed.isEmpty)
            try await sandbox.remove()
        }
    }
}

/// A flag one task sets and another reads.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .sequentiallyConsistent) }
    var isSet: Bool { value.load(ordering: .sequentiallyConsistent) }
}
