import CorralCore
import CorralHost
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Synchronization

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
