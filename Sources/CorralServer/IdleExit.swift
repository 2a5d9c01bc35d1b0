import CorralCore
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Synchronization

/// What the service is doing, for the on-demand host agent's idle exit: requests under way
/// (their response bodies included: an event stream or a streaming exec is under way until
/// its last byte) and when the last one ended.
final class ServerActivity: Sendable {
    private let state = Mutex<(inFlight: Int, last: ContinuousClock.Instant)>((0, .now))

    func begin() { state.withLock { $0.inFlight += 1 } }

    func end() {
        state.withLock {
            $0.inFlight -= 1
            $0.last = .now
        }
    }

    /// How long nothing has been under way; nil while something is.
    var idleFor: Duration? {
        state.withLock { $0.inFlight > 0 ? nil : ContinuousClock.now - $0.last }
    }
}

/// Counts each request as under way until its response body is written.
struct ActivityMiddleware: RouterMiddleware {
    typealias Context = CorralRequestContext
    let activity: ServerActivity

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
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

/// Ends the service (gracefully) once it has been idle for `after`: no request under way and
/// none for that long, and no harness run. Also when its socket is gone (its state directory
/// was removed). The host agent the command line starts on demand runs with it.
struct IdleExitService: Service {
    let after: Duration
    let activity: ServerActivity
    let workers: HarnessWorkers
    let socketPath: String?
    let logger: Logger

    func run() async throws {
        let check = min(after, .seconds(1))
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: check)
            } catch {
                return
            }
            if let socketPath, access(socketPath, F_OK) != 0 {
                logger.info("corral agent: its socket is gone; stopping", metadata: ["socket": "\(socketPath)"])
                return
            }
            guard let idle = activity.idleFor, idle >= after, await workers.count == 0 else { continue }
            logger.info("corral agent: idle; stopping", metadata: ["idle": "\(after.compactDescription)"])
            return
        }
    }
}
