import CorralAPI
import CorralCore
import CorralSandbox
import CorralServer
import Foundation
import Hummingbird
import HummingbirdTesting
import TestSupport
import Testing

@Suite("GET /v1/pools", .engine)
struct PoolRouteTests {
    // Security review, low finding: /v1/pools showed every tenant's claimed counts, and the
    // service's host name and pid, to any tenant.
    @Test("a network tenant sees idle counts and its own claims only; no host, no pid, no other tenant's claims")
    func tenantView() async throws {
        var template = SandboxTemplate(name: TemplateName(unchecked: "small"))
        template.pool.minIdle = 1
        template.pool.maxTotal = 4
        try await ServerFixture.with(templates: [template]) { fixture in
            try await fixture.test { client in
                let created = try await client.call(
                    .post, "/v1/sandboxes", token: fixture.tokenA, json: #"{"template": "small"}"#)
                #expect(created.status == .created, "\(created.text)")
                for (token, claimed) in [(fixture.tokenA, 1), (fixture.tokenB, 0)] {
                    let response = try await client.call(.get, "/v1/pools", token: token)
                    let pools = try response.decode([PoolStatus].self)
                    let pool = try #require(pools.first { $0.template.rawValue == "small" })
                    #expect(pool.claimed == claimed)
                    #expect(pool.owner.isEmpty, "the owner leaked: \(pool.owner)")
                    #expect(pool.lastError == nil)
                    #expect(!response.text.contains(ProcessInfo.processInfo.hostName))
                }
            }
            // The operator sees the pool as it is.
            try await Application(router: fixture.server.router(auth: .local)).test(.router) { client in
                let pools = try await client.call(.get, "/v1/pools", token: nil).decode([PoolStatus].self)
                #expect(pools.first?.owner.isEmpty == false)
            }
        }
    }
}
