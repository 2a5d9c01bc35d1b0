import CorralCore
import CorralSandbox
import HTTPTypes
import Hummingbird

extension HostAPI {
    /// E2B's API beside corral's (docs/e2b.md): its control plane (`/sandboxes`, `/v2/sandboxes`)
    /// with E2B API keys that are tenant tokens, and envd's data plane (`/process.Process/*`,
    /// `/filesystem.Filesystem/*`, `/files`, `/health`) for requests that name a sandbox with
    /// `E2b-Sandbox-Id` and carry its access token. None of these paths is one of corral's; like
    /// the console's, they are added beside the API (`listenerRouter`), outside docs/openapi.yaml.
    ///
    /// Both answer in E2B's error shapes, never corral's: every handler turns its own failures
    /// into E2B's answer, so the error middleware outside sees none.
    package func addE2BRoutes(to router: Router<CorralRequestContext>, auth: AuthMode) {
        let control = E2BControlPlane(host: self, auth: auth)
        for prefix in ["", "v2/"] {
            router.post("\(prefix)sandboxes") { request, context in
                await control.answer(request, context) { tenant, context in
                    try await control.create(request, tenant: tenant, context: context)
                }
            }
            router.get("\(prefix)sandboxes") { request, context in
                await control.answer(request, context) { tenant, _ in
                    try await control.list(request, tenant: tenant, paged: !prefix.isEmpty)
                }
            }
            router.post("\(prefix)sandboxes/:id/connect") { request, context in
                await control.answer(request, context) { tenant, context in
                    try await control.connect(request, idText: try context.parameters.require("id"), tenant: tenant)
                }
            }
        }
        router.get("sandboxes/:id") { request, context in
            await control.answer(request, context) { tenant, context in
                try await control.detail(idText: try context.parameters.require("id"), tenant: tenant)
            }
        }
        router.delete("sandboxes/:id") { request, context in
            await control.answer(request, context) { tenant, context in
                try await control.kill(idText: try context.parameters.require("id"), tenant: tenant)
            }
        }
        router.post("sandboxes/:id/timeout") { request, context in
            await control.answer(request, context) { tenant, context in
                try await control.setTimeout(request, idText: try context.parameters.require("id"), tenant: tenant)
            }
        }

        let plane = E2BDataPlane(host: self, processes: E2BProcessTable(), homes: E2BHomeCache())
        let process = E2BProcessService(plane: plane)
        let filesystem = E2BFilesystemService(plane: plane, watchers: E2BWatchers())
        let files = E2BFilesRoute(plane: plane)
        let ports = E2BPortProxy(plane: plane)

        router.get("health") { request, _ in
            if let target = E2BPortProxy.target(request) { return await ports.serve(request, target: target) }
            do {
                _ = try plane.sandbox(request, checkToken: false)
                return Response(status: .noContent)
            } catch {
                return E2BAPIError(converting: error).response
            }
        }
        router.get("files") { request, _ in
            if let target = E2BPortProxy.target(request) { return await ports.serve(request, target: target) }
            do {
                return try await files.read(request, sandbox: try plane.sandbox(request))
            } catch {
                return E2BFilesRoute.answer(error)
            }
        }
        router.post("files") { request, _ in
            if let target = E2BPortProxy.target(request) { return await ports.serve(request, target: target) }
            do {
                return try await files.write(request, sandbox: try plane.sandbox(request))
            } catch {
                return E2BFilesRoute.answer(error)
            }
        }

        router.post("process.Process/:method") { request, context in
            if let target = E2BPortProxy.target(request) { return await ports.serve(request, target: target) }
            let sandbox: Sandbox
            let method = context.parameters.get("method") ?? ""
            do {
                sandbox = try plane.sandbox(request)
            } catch {
                return E2BAPIError(converting: error).response
            }
            switch method {
            case "Start": return await process.start(request, context: context, sandbox: sandbox)
            case "Connect": return await process.connect(request, context: context, sandbox: sandbox)
            case "StreamInput": return await process.streamInput(request, sandbox: sandbox)
            default:
                return await Self.unary(request) { message in
                    switch method {
                    case "List": try await process.list(sandbox: sandbox)
                    case "SendInput": try await process.sendInput(message, sandbox: sandbox)
                    case "CloseStdin": try await process.closeStdin(message, sandbox: sandbox)
                    case "SendSignal": try await process.sendSignal(message, sandbox: sandbox)
                    case "Update": try await process.update(message, sandbox: sandbox)
                    default: throw ConnectError.unimplemented("process.Process/\(method.prefix(40)) is not a method")
                    }
                }
            }
        }

        router.post("filesystem.Filesystem/:method") { request, context in
            if let target = E2BPortProxy.target(request) { return await ports.serve(request, target: target) }
            let sandbox: Sandbox
            let method = context.parameters.get("method") ?? ""
            do {
                sandbox = try plane.sandbox(request)
            } catch {
                return E2BAPIError(converting: error).response
            }
            if method == "WatchDir" {
                return await filesystem.watchDir(request, context: context, sandbox: sandbox)
            }
            return await Self.unary(request) { message in
                switch method {
                case "Stat": try await filesystem.stat(message, sandbox: sandbox)
                case "MakeDir": try await filesystem.makeDir(message, sandbox: sandbox)
                case "Move": try await filesystem.move(message, sandbox: sandbox)
                case "ListDir": try await filesystem.listDir(message, sandbox: sandbox)
                case "Remove": try await filesystem.remove(message, sandbox: sandbox)
                case "CreateWatcher": try await filesystem.createWatcher(message, sandbox: sandbox)
                case "GetWatcherEvents": try await filesystem.watcherEvents(message, sandbox: sandbox)
                case "RemoveWatcher": try filesystem.removeWatcher(message, sandbox: sandbox)
                default: throw ConnectError.unimplemented("filesystem.Filesystem/\(method.prefix(40)) is not a method")
                }
            }
        }

        // Any other path is a sandbox port's when the request names one, and no route otherwise.
        for method: HTTPRequest.Method in [.get, .head, .post, .put, .patch, .delete, .options] {
            for path in ["/", "**"] {
                router.on(RouterPath(path), method: method) { request, _ in
                    guard let target = E2BPortProxy.target(request) else { throw HTTPError(.notFound) }
                    return await ports.serve(request, target: target)
                }
            }
        }
    }

    /// A unary Connect call: its JSON request in, its JSON answer or Connect error out.
    package static func unary(_ request: Request, _ body: (JSONValue) async throws -> JSONValue) async -> Response {
        do {
            return ConnectWire.unaryResponse(try await body(try await ConnectWire.unaryRequest(request)))
        } catch {
            return ConnectWire.unaryError(ConnectError(converting: error))
        }
    }
}
