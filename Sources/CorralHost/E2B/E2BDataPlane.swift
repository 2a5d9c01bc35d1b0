import CorralCore
import CorralSandbox
import Foundation
import Hummingbird
import Synchronization

/// envd's side (the sandbox's port 49983), served on corrald's own listener: requests name
/// their sandbox with `E2b-Sandbox-Id` and prove they may reach it with `X-Access-Token`, the
/// token create and connect returned. No tenant token is involved: as with E2B, the access
/// token alone is the key to one sandbox.
package struct E2BDataPlane: Sendable {
    package let host: HostAPI
    package let processes: E2BProcessTable
    package let homes: E2BHomeCache

    /// envd's port: the only one this data plane serves (a sandbox's other ports are not
    /// reachable this way yet).
    package static let envdPort = "49983"
    /// Where E2B code expects its user's home and working directory.
    package static let home = "/home/user"

    package var provisioner: Provisioner { host.provisioner }

    /// The sandbox the request names, once its access token checks. A sandbox that does not
    /// exist (or is past its end) answers as E2B's proxy does: 502 with "was not found", which
    /// the SDK raises as `SandboxNotRunningException`.
    package func sandbox(_ request: Request, checkToken: Bool = true) throws -> Sandbox {
        guard let idText = E2BHeaders.value(request, "e2b-sandbox-id"), !idText.isEmpty else {
            throw E2BAPIError.badRequest("the E2b-Sandbox-Id header is required")
        }
        if let port = E2BHeaders.value(request, "e2b-sandbox-port"), port != Self.envdPort {
            throw E2BAPIError(
                status: 502,
                message:
                    "The sandbox \(idText.prefix(80)) is running but port is not open: corral serves only envd's port 49983, not \(port.prefix(8))"
            )
        }
        return try sandbox(
            idText: idText, presented: checkToken ? [E2BHeaders.value(request, "x-access-token")] : nil)
    }

    /// The sandbox `idText` names, once one of the `presented` tokens is its access token (nil:
    /// no check).
    package func sandbox(idText: String, presented: [String?]?) throws -> Sandbox {
        guard let id = SandboxID(idText), let store = try? provisioner.records(), let record = try? store.read(id),
            record.expires.map({ $0 > Date() }) ?? true
        else {
            throw E2BAPIError(status: 502, message: "The sandbox \(idText.prefix(80)) was not found")
        }
        if let presented {
            guard let file = E2BSandboxFile.read(store, id) else {
                throw E2BAPIError(
                    status: 401,
                    message: "sandbox \(id) has no access token yet: connect to it with Sandbox.connect first")
            }
            let tokens = presented.compactMap { $0 }.filter { !$0.isEmpty }
            guard !tokens.isEmpty else {
                throw E2BAPIError(status: 401, message: "missing access token: send X-Access-Token")
            }
            guard tokens.contains(where: file.accepts) else {
                throw E2BAPIError(status: 401, message: "invalid access token")
            }
        }
        return provisioner.handle(id, tenant: record.tenant)
    }

    /// The directory relative paths and commands start from: E2B's home when the sandbox has it
    /// (the `e2b` template's image), else the workspace.
    package func home(of sandbox: Sandbox) async -> String {
        if let known = homes.lookup(sandbox.id) { return known }
        let present = (try? await sandbox.stat(Self.home)) != nil
        let home = present ? Self.home : provisioner.configuration.environment.workspace
        homes.store(sandbox.id, home)
        return home
    }

    /// `path` made absolute against the home.
    package func resolve(_ path: String, in sandbox: Sandbox) async throws -> String {
        guard !path.isEmpty else { throw ConnectError.invalidArgument("path is required") }
        if path.hasPrefix("/") { return path }
        if path == "~" { return await home(of: sandbox) }
        let relative = path.hasPrefix("~/") ? String(path.dropFirst(2)) : path
        return await home(of: sandbox) + "/" + relative
    }
}

/// Whether each sandbox has E2B's home, learned once.
package final class E2BHomeCache: Sendable {
    private let homes = Mutex<[SandboxID: String]>([:])

    package func lookup(_ id: SandboxID) -> String? { homes.withLock { $0[id] } }

    package func store(_ id: SandboxID, _ home: String) {
        homes.withLock { homes in
            // Bounded: a long-running service sees many sandboxes come and go.
            if homes.count > 4096 { homes.removeAll() }
            homes[id] = home
        }
    }
}
