import Hummingbird
import Synchronization

/// What the service is doing, for the on-demand host agent's idle exit: requests under way
/// (their response bodies included: an event stream or a streaming exec is under way until
/// its last byte) and when the last one ended.
package final class ServerActivity: Sendable {
    private let state = Mutex<(inFlight: Int, last: ContinuousClock.Instant)>((0, .now))

    package func begin() { state.withLock { $0.inFlight += 1 } }

    package func end() {
        state.withLock {
            $0.inFlight -= 1
            $0.last = .now
        }
    }

    /// How long nothing has been under way; nil while something is.
    package var idleFor: Duration? {
        state.withLock { $0.inFlight > 0 ? nil : ContinuousClock.now - $0.last }
    }
}

/// Counts each request as under way until its response body is written.
package struct ActivityMiddleware: RouterMiddleware {
    package typealias Context = CorralRequestContext
    package let activity: ServerActivity

    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws
        -> Response
    {
        activity.begin()
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            activity.end()
            throw error
        }
        let body = response.body
        let activity = self.activity
        response.body = ResponseBody(contentLength: body.contentLength) { writer in
            defer { activity.end() }
            try await body.write(writer)
        }
        return response
    }
}
