import CorralCore
import Foundation
import TestSupport
import Testing

@testable import CorralSandbox

@Suite("The lazy handle", .engine)
struct LazySandboxTests {
    @Test("nothing is provisioned before the first use; concurrent first uses share one sandbox; release removes it")
    func lazy() async throws {
        let template = PoolFixture.template(minIdle: 1)
        try await withPoolFixture(templates: [template]) { fixture in
            let pool = fixture.pool(template)
            await pool.reconcile()
            var request = fixture.request(template)
            request.env = ["WHO": "lazy"]
            let lazy = LazySandbox(provisioner: fixture.provisioner, request: request)
            #expect(await lazy.provisioned == nil)
            #expect(try await fixture.provisioner.list().isEmpty, "no sandbox before a tool needs one")
            let outputs = try await withThrowingTaskGroup(of: ToolOutput.self) { group in
                for _ in 0..<5 {
                    group.addTask { try await lazy.execute(tool: "bash", input: ["command": "echo $WHO"]) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(outputs.allSatisfy { $0.text == "lazy\n" && !$0.isError })
            let listed = try await fixture.provisioner.list()
            #expect(listed.count == 1, "one sandbox for all five first uses")
            let sandbox = try #require(await lazy.provisioned)
            #expect(sandbox.provisioning?.path == .warm)
            #expect(listed.first?.id == sandbox.id)
            try await lazy.release()
            #expect(try await fixture.provisioner.list().isEmpty)
            let after = try await lazy.execute(tool: "bash", input: ["command": "true"])
            #expect(after.isError)
        }
    }

    @Test("a provisioning failure is a tool error, and the next use tries again")
    func failureNotCached() async throws {
        try await withPoolFixture(templates: []) { fixture in
            let lazy = LazySandbox(
                provisioner: fixture.provisioner, request: ProvisionRequest(image: "corral/missing:0"))
            let output = try await lazy.execute(tool: "bash", input: ["command": "true"])
            #expect(output.isError)
            #expect(output.text.contains("image 'corral/missing:0' is not on the engine"))
            await #expect(throws: CorralError.self) { try await lazy.sandbox() }
            #expect(await lazy.provisioned == nil)
        }
    }
}
