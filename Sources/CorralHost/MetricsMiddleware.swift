import CoreMetrics
import Foundation
import Hummingbird
import Prometheus

/// Counts requests and their latency per route and status, and executes per tool and result,
/// on the service's registry (`GET /metrics`). Routes are the router's patterns
/// (`/v1/sandboxes/{id}`), never raw paths, so ids do not explode the label space.
package struct MetricsMiddleware: RouterMiddleware {
    package typealias Context = CorralRequestContext
    package let factory: PrometheusMetricsFactory

    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws
        -> Response
    {
        let started = ContinuousClock.now
        var status = 500
        defer {
            let route = context.endpointPath ?? "unmatched"
            let dimensions = [("method", request.method.rawValue), ("route", route), ("status", String(status))]
            Counter(label: "corral_http_requests_total", dimensions: dimensions, factory: factory).increment()
            let elapsed = ContinuousClock.now - started
            CoreMetrics.Timer(label: "corral_http_request_seconds", dimensions: [("route", route)], factory: factory)
                .recordNanoseconds(
                    elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
        }
        do {
            let response = try await next(request, context)
            status = Int(response.status.code)
            return response
        } catch {
            status = ErrorMiddleware.describe(error).0
            throw error
        }
    }
}

/// The service's own figures beside the request counters.
package struct ServerMetrics: Sendable {
    package let factory: PrometheusMetricsFactory

    package func executed(tool: String, isError: Bool, seconds: Double) {
        Counter(
            label: "corral_executes_total", dimensions: [("tool", tool), ("result", isError ? "error" : "ok")],
            factory: factory
        )
        .increment()
        CoreMetrics.Timer(label: "corral_execute_seconds", dimensions: [("tool", tool)], factory: factory)
            .recordNanoseconds(Int64(seconds * 1e9))
    }

    package func error(code: String) {
        Counter(label: "corral_errors_total", dimensions: [("code", code)], factory: factory).increment()
    }
}
