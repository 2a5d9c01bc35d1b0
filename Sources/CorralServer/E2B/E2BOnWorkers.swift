import CorralAPI
import CorralCore
import CorralFleet
import CorralHost
import Foundation
import Hummingbird

/// On a control plane with workers, ahead of E2B's routes: a call for a sandbox on a worker goes
/// to that worker over its link, whole, as corral's own API calls do (`WorkerRoutingMiddleware`).
/// envd's calls (`E2b-Sandbox-Id`) go as they came, with the sandbox's access token, which the
/// worker checks; a call by id on E2B's control plane (get, kill, timeout, connect) goes once
/// the API key checked here, as its tenant's. Creation and listing are `E2BControlPlane`'s.
struct E2BWorkerRouting: RouterMiddleware {
    typealias Context = CorralRequestContext

    let fleet: WorkerFleet
    let control: E2BControlPlane

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        // Corral's own paths are never E2B's: one that reached E2B's catch-all (a method no route
        // of corral's takes) must not go to a worker, where the link may serve it.
        let path = request.uri.path
        guard path != "/v1", !path.hasPrefix("/v1/") else { return try await next(request, context) }
        if let idText = E2BHeaders.value(request, "e2b-sandbox-id") {
            guard let id = SandboxID(idText) else { return try await next(request, context) }
            let route = fleet.route(id)
            switch route {
            case .local:
                return try await next(request, context)
            case .worker(_, let link):
                do {
                    // As the sandbox's own tenant, never the operator: envd's calls carry no key,
                    // only the sandbox's access token, which the worker checks.
                    guard let owner = fleet.tenant(of: id) else { return try await next(request, context) }
                    return try await Self.forward(request, context: context, tenant: owner, link: link)
                } catch {
                    return E2BAPIError(converting: error).response
                }
            case .down(let name), .lost(let name):
                return Self.unreachable(id, worker: name, route: route).response
            }
        }
        guard let id = Self.sandboxInPath(request.uri.path) else { return try await next(request, context) }
        let route = fleet.route(id)
        switch route {
        case .local:
            return try await next(request, context)
        case .worker(_, let link):
            return await control.answer(request, context) { tenant, context in
                let response = try await Self.forward(request, context: context, tenant: tenant, link: link)
                if request.method == .delete, (200..<300).contains(response.status.code) { fleet.forget(id) }
                return response
            }
        case .down(let name), .lost(let name):
            return await control.answer(request, context) { _, _ in
                throw Self.unreachable(id, worker: name, route: route)
            }
        }
    }

    /// The sandbox id in E2B's control-plane paths: `/sandboxes/{id}[/...]` and
    /// `/v2/sandboxes/{id}/...`.
    static func sandboxInPath(_ path: String) -> SandboxID? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        if parts.count >= 2, parts[0] == "sandboxes" { return SandboxID(String(parts[1])) }
        if parts.count >= 3, parts[0] == "v2", parts[1] == "sandboxes" { return SandboxID(String(parts[2])) }
        return nil
    }

    static func forward(_ request: Request, context: Context, tenant: TenantID, link: WorkerLinkClient) async throws
        -> Response
    {
        let presence = await ClientPresence.of(context.channel)
        return try await cancellingWhenClientLeaves(presence) {
            try await WorkerRoutingMiddleware.forward(
                request, body: request.body, tenant: tenant, link: link, presence: presence)
        }
    }

    /// What E2B's SDK understands: a sandbox on a lost worker is gone (502 "was not found", its
    /// `SandboxNotRunningException`); one whose link is down may come back (503).
    static func unreachable(_ id: SandboxID, worker: String, route: WorkerFleet.Route) -> E2BAPIError {
        if case .lost = route {
            return E2BAPIError(
                status: 502,
                message: "The sandbox \(id) was not found: its worker '\(worker)' is lost, and its files with it")
        }
        return E2BAPIError(
            status: 503, message: "sandbox \(id) runs on worker '\(worker)', whose link is down; try again shortly")
    }
}

extension CorralServer {
    /// Where E2B's create puts a sandbox on a control plane with workers: nil for this host.
    /// E2B's `base` goes to any worker of the tenant's groups (the worker picks its `e2b` or
    /// `base` template, else the default image); another template id, to a worker offering it.
    func placeOnWorker(tenant: TenantID, templateID: String) async throws -> (name: String, link: WorkerLinkClient)? {
        guard let fleet else { return nil }
        switch try await place(tenant: tenant, template: templateID == "base" ? nil : templateID, fleet: fleet) {
        case .worker(let name, let link): return (name, link)
        case .local, .down, .lost: return nil
        }
    }

    /// E2B's create, forwarded to the worker placement chose, within the tenant's quota across
    /// the fleet.
    func e2bCreate(
        _ body: JSONValue, request: Request, tenant: TenantID, on worker: (name: String, link: WorkerLinkClient)
    ) async throws -> Response {
        let payload = try JSONEncoder().encode(body)
        let fleet = self.fleet
        let answer = try await quotas.admit(
            tenant, limit: configuration.sandboxesPerTenant, what: .sandboxes,
            current: { try await sandboxCount(of: tenant) }
        ) { () async throws -> (Response, String?) in
            let response = try await WorkerRoutingMiddleware.forward(
                request, body: WorkerRoutingMiddleware.once(ByteBuffer(bytes: payload)), tenant: tenant,
                link: worker.link, bodyLength: payload.count)
            guard response.status.code == 201 else { return (response, nil) }
            let created = try await WorkerRoutingMiddleware.decode(JSONValue.self, from: response)
            guard let idText = created["sandboxID"]?.stringValue, let id = SandboxID(idText) else {
                throw E2BAPIError(status: 502, message: "worker '\(worker.name)' answered a create with no sandboxID")
            }
            fleet?.recordPlacement(id, on: worker.name, tenant: tenant)
            return (JSONResponse.make(created, status: 201), idText)
        }
        return answer.0
    }

    /// The tenant's sandboxes on workers, as E2B lists them, filtered as `query` asks (paging
    /// is the caller's): each worker of the tenant's groups is asked for its whole list.
    func e2bWorkerRows(_ request: Request, tenant: TenantID, fleet: WorkerFleet) async -> [JSONValue] {
        let groups = tenant == .local ? nil : try? await tenants.placementGroups(of: tenant)
        var query: [String] = []
        for key in ["metadata", "state"] {
            if let value = request.uri.queryParameters[Substring(key)] {
                query.append("\(key)=\(value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")")
            }
        }
        var head = request.head
        head.method = .get
        head.path = "/v2/sandboxes" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        let listing = Request(head: head, body: RequestBody(buffer: ByteBuffer()))
        var rows: [JSONValue] = []
        for (name, link) in fleet.links(in: groups) {
            do {
                let response = try await WorkerRoutingMiddleware.forward(
                    listing, body: WorkerRoutingMiddleware.once(nil), tenant: tenant, link: link)
                guard response.status.code == 200 else { continue }
                rows += try await WorkerRoutingMiddleware.decode([JSONValue].self, from: response).filter { row in
                    row["sandboxID"]?.stringValue.flatMap(SandboxID.init).map { !fleet.isAbandoned($0) } ?? false
                }
            } catch {
                logger.warning(
                    "a worker did not answer E2B's listing", metadata: ["worker": "\(name)", "error": "\(error)"])
            }
        }
        return rows
    }
}
