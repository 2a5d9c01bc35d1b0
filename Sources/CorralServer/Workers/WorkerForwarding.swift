import CorralAPI
import CorralCore
import CorralFleet
import CorralHost
import CorralSandbox
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// On the control plane, ahead of the sandbox routes: a call for a sandbox on a worker goes to
/// that worker, whole, over its link, and its answer comes back as the worker gave it. The
/// worker serves corral's own API, so every sandbox route (exec with stdin, files, commands,
/// archives) works there as here. Creation is placed (`WorkerFleet.place`); a listing adds each
/// worker's sandboxes to the local ones.
struct WorkerRoutingMiddleware: RouterMiddleware {
    typealias Context = CorralRequestContext

    let fleet: WorkerFleet
    let server: CorralServer

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let parts = request.uri.path.split(separator: "/", omittingEmptySubsequences: true)
        guard parts.count >= 2, parts[0] == "v1", parts[1] == "sandboxes" else {
            return try await next(request, context)
        }
        let tenant = try context.requireTenant()
        if parts.count == 2 {
            switch request.method {
            case .post: return try await create(request, tenant: tenant, context: context, next: next)
            case .get: return try await list(request, tenant: tenant, context: context, next: next)
            default: return try await next(request, context)
            }
        }
        // A malformed id is the local route's to refuse, with its usual answer.
        guard let id = try? SandboxID(validating: String(parts[2])) else { return try await next(request, context) }
        var route = fleet.route(id)
        if let error = fleet.unreachable(id, route) { throw error }
        if case .local = route, (try? server.provisioner.records().read(id)) == nil {
            // Not on this host, and no heartbeat has named it: another replica may have just
            // made it on a worker, or this one started a moment ago. The workers are asked.
            if let found = await fleet.locate(id, tenant: tenant) {
                route = found
            } else if fleet.isWarmingUp {
                throw fleet.notYetKnown(id)
            }
        }
        switch route {
        case .local:
            return try await next(request, context)
        case .down, .lost:
            return try await next(request, context)
        case .worker(let name, let link):
            let presence = await ClientPresence.of(context.channel)
            let response = try await cancellingWhenClientLeaves(presence) {
                try await Self.forward(request, body: request.body, tenant: tenant, link: link, presence: presence)
            }
            if parts.count == 3, request.method == .delete, (200..<300).contains(response.status.code) {
                fleet.forget(id)
            }
            if parts.count == 3, request.method == .get, response.status.code == 200 {
                var info = try await Self.decode(SandboxInfo.self, from: response)
                info.worker = name
                return JSONResponse.make(info)
            }
            return response
        }
    }

    private func create(
        _ request: Request, tenant: TenantID, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let bytes = try await collect(request, limit: context.maxUploadSize)
        let body = try? JSONDecoder().decode(CreateSandboxRequest.self, from: Data(bytes))
        // What the local route would refuse, it refuses here too, with its own words.
        let replay = Request(head: request.head, body: RequestBody(buffer: ByteBuffer(bytes: bytes)))
        guard let body else { return try await next(replay, context) }
        switch try await server.place(tenant: tenant, template: body.template, fleet: fleet) {
        case .local, .down, .lost:
            return try await next(replay, context)
        case .worker(let name, let link):
            var forwarded = bytes
            if let session = body.session {
                // Sessions live on the control plane: checked here, and named by a label there.
                try await server.requireSession(try SessionID(validating: session), tenant: tenant)
                var changed = body
                changed.session = nil
                changed.labels = (body.labels ?? [:]).merging(["session": session]) { _, new in new }
                forwarded = Array(try JSONEncoder().encode(changed))
            }
            // The tenant's quota counts its sandboxes here and on every worker.
            let fleet = self.fleet
            let server = self.server
            let payload = forwarded
            let answer = try await server.quotas.admit(
                tenant, limit: server.configuration.sandboxesPerTenant, what: .sandboxes,
                current: { try await server.sandboxCount(of: tenant) }
            ) { () async throws -> (Response, CreatedSandbox?) in
                let response = try await Self.forward(
                    request, body: Self.once(ByteBuffer(bytes: payload)), tenant: tenant, link: link,
                    bodyLength: payload.count)
                guard response.status.code == 201 else { return (response, nil) }
                let created = try await Self.decode(CreatedSandbox.self, from: response)
                fleet.recordPlacement(created.id, on: name, tenant: tenant)
                return (JSONResponse.make(created, status: 201), created)
            }
            return answer.0
        }
    }

    private func list(
        _ request: Request, tenant: TenantID, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let local = try await next(request, context)
        guard local.status.code == 200 else { return local }
        var rows = try await Self.decode([SandboxInfo].self, from: local)
        let groups = tenant == .local ? nil : try await server.tenants.placementGroups(of: tenant)
        for (name, link) in fleet.links(in: groups) {
            do {
                let response = try await Self.forward(request, body: Self.once(nil), tenant: tenant, link: link)
                guard response.status.code == 200 else { continue }
                rows += try await Self.decode([SandboxInfo].self, from: response).filter { !fleet.isAbandoned($0.id) }
                    .map {
                        row in
                        var row = row
                        row.worker = name
                        return row
                    }
            } catch {
                // One worker that does not answer leaves the others' sandboxes listed.
                server.logger.warning(
                    "a worker did not answer a listing", metadata: ["worker": "\(name)", "error": "\(error)"])
            }
        }
        return JSONResponse.make(rows)
    }

    // MARK: The call itself

    /// Headers that belong to one connection, never forwarded.
    static let hopByHop: [HTTPField.Name] =
        [
            .connection, .transferEncoding, .upgrade, .te, .proxyAuthorization,
        ] + ["Keep-Alive", "Proxy-Connection"].compactMap { HTTPField.Name($0) }

    /// Sends `request` to the worker on `link` as `tenant`'s call, and answers with the worker's
    /// answer as it streams. The tenant's own token stays here: the worker trusts its link.
    static func forward(
        _ request: Request, body: (some AsyncSequence<ByteBuffer, any Error> & Sendable)?, tenant: TenantID,
        link: WorkerLinkClient, presence: ClientPresence? = nil, bodyLength: Int? = nil
    ) async throws -> Response {
        var head = request.head
        head.scheme = "http"
        head.authority = "worker"
        for name in hopByHop { head.headerFields[name] = nil }
        head.headerFields[.authorization] = nil
        head.headerFields[.cookie] = nil
        if let bodyLength { head.headerFields[.contentLength] = String(bodyLength) }
        head.headerFields[corral: WorkerProtocol.tenantHeader] = tenant.rawValue
        head.headerFields[corral: WorkerProtocol.epochHeader] = String(link.epoch)
        let (answer, answerBody, task) = try await link.call(head, body: body)
        var headers = answer.headerFields
        for name in hopByHop { headers[name] = nil }
        return Response(
            status: answer.status, headers: headers,
            body: ResponseBody { writer in
                // A client that leaves while the answer streams ends the call on the worker too
                // (its stream is reset, and the worker's route cancels the command).
                let token = presence?.onGone { task.cancel() }
                defer { presence?.remove(token) }
                do {
                    while let chunk = try await answerBody.receive() {
                        try await writer.write(ByteBuffer(bytes: chunk))
                    }
                    try await writer.finish(nil)
                } catch {
                    task.cancel()
                    throw error
                }
                _ = try? await task.value
            })
    }

    /// Removes a sandbox on a worker as its tenant would.
    static func remove(_ sandbox: WorkerSandbox, on link: WorkerLinkClient) async throws {
        try await link.removeSandbox(sandbox)
    }

    static func decode<T: Decodable>(_ type: T.Type, from response: Response) async throws -> T {
        let sink = BodySink()
        try await response.body.write(BodyCollector(sink: sink))
        return try CorralClient.decoder().decode(T.self, from: sink.data())
    }

    static func once(_ buffer: ByteBuffer?) -> OneBuffer { OneBuffer(buffer: buffer) }
}

/// A body of at most one buffer.
struct OneBuffer: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let buffer: ByteBuffer?

    struct AsyncIterator: AsyncIteratorProtocol {
        var buffer: ByteBuffer?
        mutating func next() async throws -> ByteBuffer? {
            defer { buffer = nil }
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(buffer: buffer) }
}

/// Where `BodyCollector` puts a response's bytes (at most 64 MiB: a listing, an inspection).
final class BodySink: Sendable {
    private let buffer = Mutex(ByteBuffer())

    func append(_ bytes: ByteBuffer) throws {
        try buffer.withLock { buffer in
            guard buffer.readableBytes + bytes.readableBytes <= 64 << 20 else {
                throw CorralError(.payloadTooLarge, "a worker's answer is larger than 64 MiB")
            }
            var bytes = bytes
            buffer.writeBuffer(&bytes)
        }
    }

    func data() -> Data { buffer.withLock { Data($0.readableBytesView) } }
}

/// A response body read into memory, for the answers the control plane looks into.
struct BodyCollector: ResponseBodyWriter {
    let sink: BodySink

    mutating func write(_ buffer: ByteBuffer) async throws { try sink.append(buffer) }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}

extension CorralServer {
    /// The sandboxes `tenant` holds, for its quota: on this host, and on the workers. With
    /// replicas (a shared store) the workers are asked: another replica may have made one a
    /// moment ago, which no heartbeat here has listed yet.
    func sandboxCount(of tenant: TenantID) async throws -> Int {
        let here = try await provisioner.list(tenant: tenant).count
        guard let fleet else { return here }
        guard quotas.tallies != nil else { return here + fleet.count(of: tenant) }
        return here + (await fleet.liveCount(of: tenant, groups: try await workerGroups(of: tenant)))
    }

    /// The worker groups `tenant`'s sandboxes may run in.
    func workerGroups(of tenant: TenantID) async throws -> [String] {
        tenant == .local ? [WorkerGroup.defaultName] : try await tenants.placementGroups(of: tenant)
    }

    /// Where a new sandbox of `tenant` goes (`WorkerFleet.place`), with this host's own pool and
    /// room as the local candidate.
    func place(tenant: TenantID, template: String?, fleet: WorkerFleet) async throws -> WorkerFleet.Route {
        let groups = try await workerGroups(of: tenant)
        var localWarm = false
        var localFree = 0.0
        if fleet.settings.localGroup.map(groups.contains) == true {
            if let template {
                for pool in runner.pools where pool.template.name.rawValue == template {
                    localWarm = await pool.currentStatus().idle > 0
                }
            }
            let held = (try? await provisioner.list().count) ?? 0
            let room = max(fleet.settings.localMaxSandboxes, 1)
            localFree = Double(room - held) / Double(room)
        }
        var generator = SystemRandomNumberGenerator()
        return try fleet.place(
            groups: groups, template: template, localWarm: localWarm, localFree: localFree, using: &generator)
    }
}
