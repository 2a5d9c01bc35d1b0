import CorralAPI
import CorralCore
import CorralHost
import CorralSession
import Foundation
import Hummingbird
import ServiceLifecycle

extension CorralServer {
    func addSessionRoutes(to group: RouterGroup<CorralRequestContext>) {
        group.post("sessions") { request, context -> Response in
            let tenant = try context.requireTenant()
            let store = try sessionStore()
            let body =
                try await decodeOptionalJSON(CreateSessionRequest.self, from: request, context: context)
                ?? CreateSessionRequest()
            let id = try chosenSessionID(body.id, tenant: tenant)
            let info = try await quotas.admit(
                tenant, limit: configuration.sessionsPerTenant, what: .sessions,
                current: { try await store.list().filter { $0.tenant == tenant }.count }
            ) { try await store.create(id: id, tenant: tenant, metadata: body.metadata ?? [:]) }
            try await keepOnlyIfTenantRemains(context) { try? await store.delete(info.id) }
            return JSONResponse.make(info, status: 201)
        }

        group.get("sessions") { _, context -> Response in
            let tenant = try context.requireTenant()
            return JSONResponse.make(try await sessionStore().list().filter { $0.tenant == tenant })
        }

        group.get("sessions/:id") { _, context -> Response in
            JSONResponse.make(try await ownSession(context).info)
        }

        group.post("sessions/:id/events") { request, context -> Response in
            let (id, _) = try await ownSession(context)
            let bytes = try await collect(request, limit: configuration.maxAppendBytes)
            guard !bytes.isEmpty else {
                throw CorralError.invalidArgument("the request has no body; send a JSON object")
            }
            let body = try AppendEventsRequest(exact: ExactJSON.parse(bytes))
            guard !body.events.isEmpty else {
                throw CorralError.invalidArgument("'events' is empty; send at least one")
            }
            let events = try body.events.map { try $0.newEvent() }
            let store = try sessionStore()
            let lease: Lease
            if let epoch = body.epoch {
                lease = Lease(session: id, epoch: epoch)
            } else {
                lease = try await store.currentLease(id)
            }
            let result = try await store.append(
                id, events, expectedSeq: body.expectedSeq, lease: lease, durability: try body.storeDurability())
            return JSONResponse.make(AppendEventsResponse(result), status: result.written > 0 ? 201 : 200)
        }

        group.get("sessions/:id/events") { request, context -> Response in
            let (id, _) = try await ownSession(context)
            let from = try queryNumber(request, "from") ?? 1
            let limit = try queryNumber(request, "limit").map { Int(clamping: $0) }
            if let limit, limit < 1 || limit > 10_000 {
                throw CorralError.invalidArgument("limit must be between 1 and 10000, got \(limit)")
            }
            let page = try await sessionStore().readPage(id, from: max(from, 1), limit: limit)
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(
                status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: page.exactJSON)))
        }

        // A live tail as server-sent events: every event from `from` (or after Last-Event-ID)
        // as `id: seq`, `event: type`, `data: the event as JSON`, until the client goes away.
        group.get("sessions/:id/events/stream") { request, context -> Response in
            let (id, _) = try await ownSession(context)
            let store = try sessionStore()
            var from = try queryNumber(request, "from") ?? 1
            if let last = request.headers.first(where: { $0.name.canonicalName == "last-event-id" }).flatMap({
                UInt64($0.value)
            }) {
                from = min(last, UInt64.max - 1) + 1
            }
            var headers = HTTPFields()
            headers[.contentType] = "text/event-stream"
            headers[.cacheControl] = "no-store"
            let start = max(from, 1)
            let keepAlive = configuration.streamKeepAlive
            return Response(
                status: .ok, headers: headers,
                body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: ": corral session \(id)\n\n"))
                    // Frames come from two producers: the tail, and a keep-alive comment now and
                    // then, whose write fails once the client has gone (an idle stream would
                    // never notice otherwise). A graceful shutdown ends the stream.
                    let (frames, continuation) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(1024))
                    let producers = Task {
                        try await withThrowingTaskGroup(of: Void.self) { group in
                            group.addTask {
                                defer { continuation.finish() }
                                for try await event in store.subscribe(id, from: start) {
                                    continuation.yield(
                                        "id: \(event.seq)\nevent: \(event.type)\ndata: \(event.jsonLine)\n\n")
                                }
                            }
                            group.addTask {
                                // A tenant removed meanwhile keeps no stream open.
                                while await tenantRemains(context) {
                                    try await Task.sleep(for: keepAlive)
                                    continuation.yield(": keep-alive\n\n")
                                }
                                continuation.finish()
                            }
                            _ = try await group.next()
                            group.cancelAll()
                        }
                    }
                    defer { producers.cancel() }
                    try await withGracefulShutdownHandler {
                        for await frame in frames {
                            try await writer.write(ByteBuffer(string: frame))
                        }
                    } onGracefulShutdown: {
                        continuation.finish()
                    }
                    try await writer.finish(nil)
                })
        }

        group.post("sessions/:id/fork") { request, context -> Response in
            let tenant = try context.requireTenant()
            let (id, _) = try await ownSession(context)
            let body = try await decodeJSON(ForkSessionRequest.self, from: request, context: context)
            let store = try sessionStore()
            let newID = try chosenSessionID(body.id, tenant: tenant)
            let info = try await quotas.admit(
                tenant, limit: configuration.sessionsPerTenant, what: .sessions,
                current: { try await store.list().filter { $0.tenant == tenant }.count }
            ) { try await store.fork(id, atSeq: body.at, newID: newID) }
            try await keepOnlyIfTenantRemains(context) { try? await store.delete(info.id) }
            return JSONResponse.make(info, status: 201)
        }

        group.post("sessions/:id/wake") { _, context -> Response in
            let (id, _) = try await ownSession(context)
            return JSONResponse.make(try await sessionStore().wake(id))
        }
    }

    /// A session id the client chose. Session ids are one namespace for every tenant, so a
    /// network tenant may not choose one at all: answering 409 for a taken id would tell it that
    /// another tenant's session exists. It is refused the same way whether or not the id is
    /// taken, before anything looks. The local tenant (the operator, who sees every session's
    /// files anyway) may choose.
    func chosenSessionID(_ text: String?, tenant: TenantID) throws -> SessionID? {
        guard let text else { return nil }
        guard tenant == .local else {
            throw CorralError.invalidArgument(
                "a session id cannot be chosen by a network tenant",
                hint: "leave out 'id' (corral: --id); the service picks one and returns it")
        }
        return try SessionID(validating: text)
    }

    func sessionStore() throws -> any SessionStore {
        guard let sessions else { throw CorralError(.unsupported, "this service keeps no sessions") }
        return sessions
    }

    /// The caller's session named in the path. Another tenant's is as absent as a missing one.
    func ownSession(_ context: CorralRequestContext) async throws -> (id: SessionID, info: SessionInfo) {
        let tenant = try context.requireTenant()
        let id = try SessionID(validating: try context.parameters.require("id"))
        let info: SessionInfo
        do {
            info = try await sessionStore().session(id)
        } catch let error as CorralError where error.code == .notFound {
            throw CorralError.notFound("session \(id) not found")
        }
        guard info.tenant == tenant else { throw CorralError.notFound("session \(id) not found") }
        return (id, info)
    }
}

/// Like `decodeJSON`, but an empty body is nil rather than an error.
func decodeOptionalJSON<T: Decodable>(_ type: T.Type, from request: Request, context: CorralRequestContext) async throws
    -> T?
{
    let bytes = try await collect(request, limit: context.maxUploadSize)
    guard !bytes.isEmpty else { return nil }
    do {
        return try JSONDecoder().decode(type, from: Data(bytes))
    } catch let error as DecodingError {
        throw CorralError.invalidArgument(ErrorMiddleware.describe(decoding: error))
    }
}

func queryNumber(_ request: Request, _ name: String) throws -> UInt64? {
    guard let text = request.uri.queryParameters[Substring(name)] else { return nil }
    guard let value = UInt64(text) else {
        throw CorralError.invalidArgument(
            "the query parameter '\(name)' must be a non-negative whole number, got '\(text)'")
    }
    return value
}
