import CorralAPI
import Foundation
import Hummingbird
import HummingbirdTesting
import TestSupport
import Testing

@Suite("Prometheus metrics", .engine)
struct MetricsTests {
    @Test("/metrics counts requests by route pattern, executes by tool and errors by code, all prefixed corral_")
    func metrics() async throws {
        try await ServerFixture.with { fixture in
            try await fixture.test { client in
                let created = try await client.call(
                    .post, "/v1/sandboxes", token: fixture.tokenA, json: SandboxRouteTests.create)
                let id = try created.decode(CreatedSandbox.self).id
                _ = try await client.call(
                    .post, "/v1/sandboxes/\(id)/execute", token: fixture.tokenA,
                    json: #"{"name": "bash", "input": {"command": "true"}}"#)
                _ = try await client.call(
                    .post, "/v1/sandboxes/\(id)/execute", token: fixture.tokenA,
                    json: #"{"name": "made-up", "input": {}}"#)
                _ = try await client.call(.get, "/v1/sandboxes/sb-missing00000", token: fixture.tokenA)
                let metrics = try await client.call(.get, "/metrics", token: nil)
                #expect(metrics.status == .ok)
                let text = metrics.text
                #expect(
                    text.contains(#"corral_http_requests_total{method="POST",route="/v1/sandboxes",status="201"} 1"#))
                #expect(text.contains(#"corral_executes_total{tool="bash",result="ok"} 1"#))
                #expect(
                    text.contains(#"corral_executes_total{tool="unknown",result="error"} 1"#),
                    "tool names from clients do not become labels")
                #expect(text.contains(#"corral_errors_total{code="not_found"} 1"#))
                #expect(text.contains("corral_http_request_seconds_bucket"))
                #expect(!text.contains(id.rawValue), "ids never become labels")
                let names = text.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }.map {
                    String($0.prefix { $0 != "{" && $0 != " " })
                }
                #expect(
                    names.allSatisfy { $0.hasPrefix("corral_") }, "\(Set(names).filter { !$0.hasPrefix("corral_") })")
            }
        }
    }
}
