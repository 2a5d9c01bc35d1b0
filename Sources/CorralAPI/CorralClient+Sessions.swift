import CorralCore
import CorralSession
import CurlHTTP
import Foundation
import Synchronization

extension CorralClient {
    /// The service takes JSON bodies up to this size (larger ones are refused with a 413);
    /// `appendEvents` splits what it sends to stay under it.
    public static let maxJSONBodyBytes = 1 << 20

    public func createSession(id: SessionID? = nil, metadata: [String: String] = [:]) async throws -> SessionInfo {
        try await call(
            .post, "/v1/sessions",
            body: CreateSessionRequest(id: id?.rawValue, metadata: metadata.isEmpty ? nil : metadata))
    }

    public func listSessions() async throws -> [SessionInfo] {
        try await call(.get, "/v1/sessions")
    }

    public func session(_ id: SessionID) async throws -> SessionInfo {
        try await call(.get, "/v1/sessions/\(id)")
    }

    /// Appends `events` at `expectedSeq` under the lease `epoch` (nil: the current one). When
    /// one request would be larger than the service accepts, the events go in several, in
    /// order; `landed` sees each request's result once it returned (durable, for `.fsync`).
    /// A failure stops at the request that failed: the parts before it are kept.
    public func appendEvents(
        _ id: SessionID, _ events: [NewEvent], expectedSeq: UInt64?, epoch: UInt64?, durability: Durability,
        landed: (AppendResult) async throws -> Void
    ) async throws {
        let encoder = JSONEncoder()
        let inputs = events.map {
            EventInput(id: $0.id?.rawValue, type: $0.type, data: $0.data == .null ? nil : $0.data)
        }
        // Room for the envelope: the keys, the seq, the epoch and the durability.
        let budget = Self.maxJSONBodyBytes - 256
        var parts: [[EventInput]] = []
        var current: [EventInput] = []
        var size = 0
        for input in inputs {
            let bytes = try encoder.encode(input).count + 1
            guard bytes <= budget else {
                throw CorralError(
                    .payloadTooLarge,
                    "a '\(input.type.prefix(60))' event is \(Self.mebibytes(bytes)) as JSON; the service takes at most \(Self.mebibytes(budget)) in one request",
                    hint: "make the event smaller: put large payloads in a sandbox file and record the path")
            }
            if size + bytes > budget, !current.isEmpty {
                parts.append(current)
                current = []
                size = 0
            }
            current.append(input)
            size += bytes
        }
        if !current.isEmpty { parts.append(current) }
        var expected = expectedSeq
        for part in parts {
            let body = AppendEventsRequest(
                events: part, expectedSeq: expected, epoch: epoch, durability: Self.wireName(durability))
            let response: AppendEventsResponse = try await decode(
                send(
                    request(
                        .post, "/v1/sessions/\(id)/events", body: .bytes(body.exactJSON()),
                        contentType: "application/json")))
            let result = AppendResult(
                events: response.events, written: response.written, head: response.head, durable: response.durable)
            if expected != nil { expected = result.lastSeq + 1 }
            try await landed(result)
        }
    }

    /// Events from seq `from`, at most `limit` (the service's page size when nil).
    public func events(_ id: SessionID, from: UInt64, limit: Int?) async throws -> EventPage {
        var query = ["from": String(from)]
        if let limit { query["limit"] = String(limit) }
        let response = try await send(request(.get, "/v1/sessions/\(id)/events" + Self.query(query)))
        guard response.status == 200 else { throw Self.error(status: response.status, body: response.body) }
        return try EventPage(exact: ExactJSON.parse(response.body))
    }

    public func forkSession(_ id: SessionID, at seq: UInt64, newID: SessionID?) async throws -> SessionInfo {
        try await call(.post, "/v1/sessions/\(id)/fork", body: ForkSessionRequest(at: seq, id: newID?.rawValue))
    }

    public func wakeSession(_ id: SessionID) async throws -> Lease {
        try await call(.post, "/v1/sessions/\(id)/wake")
    }

    static func mebibytes(_ bytes: Int) -> String {
        String(format: "%.1f MiB", Double(bytes) / Double(1 << 20))
    }

    static func wireName(_ durability: Durability) -> String {
        switch durability {
        case .fsync: "fsync"
        case .groupCommit: "group"
        case .none: "none"
        }
    }
}

// MARK: The live tail

/// How `followEvents` keeps a tail going.
public struct EventStreamOptions: Sendable {
    /// How long to keep trying to reconnect after the stream dropped, before giving up.
    public var reconnectFor: Duration = .seconds(60)
    /// A stream that sends nothing for this long (the service sends a keep-alive comment every
    /// 15 s by default) is taken as dropped, and reopened.
    public var idleTimeout: Duration = .seconds(60)
    /// The first wait before reconnecting; it doubles up to `maxReconnectDelay`.
    public var reconnectDelay: Duration = .milliseconds(100)
    public var maxReconnectDelay: Duration = .seconds(2)

    public init() {}
}

extension CorralClient {
    /// Follows a session's events from seq `from` over server-sent events, handing each to
    /// `handler` in order, until `handler` returns false or the task is cancelled. When the
    /// stream drops (the service restarted, the connection broke, nothing arrived for
    /// `idleTimeout`) it reconnects with `Last-Event-ID`, so that no event is missed or
    /// handed over twice. Refusals (unknown session, bad token) end it at once; a service
    /// that stays away for `reconnectFor` ends it with `.unavailable`.
    public func followEvents(
        _ id: SessionID, from: UInt64, options: EventStreamOptions = EventStreamOptions(),
        _ handler: @escaping @Sendable (Event) async throws -> Bool
    ) async throws {
        let progress = StreamProgress(next: max(from, 1))
        var delay = options.reconnectDelay
        var failingSince: ContinuousClock.Instant?
        while true {
            try Task.checkCancellation()
            let failure: any Error
            do {
                let stopped = try await withThrowingTaskGroup(of: Bool.self) { group in
                    group.addTask { try await self.streamOnce(id, progress: progress, handler) }
                    group.addTask {
                        try await progress.watchIdle(limit: options.idleTimeout)
                        return false
                    }
                    defer { group.cancelAll() }
                    return try await group.next() ?? false
                }
                if stopped { return }
                failure = CorralError(.unavailable, "the service ended the event stream")
            } catch let error as HandlerFailure {
                throw error.error
            } catch let error as CorralError
                where error.code != .unavailable && error.code != .io && error.code != .timeout
            {
                throw error
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                if Task.isCancelled { throw CancellationError() }
                failure = error
            }
            let now = ContinuousClock.now
            if progress.takeConnected() {
                failingSince = now
                delay = options.reconnectDelay
            } else if let since = failingSince, now - since > options.reconnectFor {
                throw CorralError(
                    .unavailable,
                    "lost the event stream of session \(id) and could not reconnect for \(options.reconnectFor.compactDescription): \(failure)",
                    hint:
                        "check that the service runs; `corral session tail \(id) --from \(progress.next)` goes on from here"
                )
            } else if failingSince == nil {
                failingSince = now
            }
            try await Task.sleep(for: delay)
            delay = min(delay * 2, options.maxReconnectDelay)
        }
    }

    /// One connection of the tail. True when `handler` asked to stop; false when the stream
    /// ended. Throws what broke it; `handler`'s own errors come wrapped in `HandlerFailure`.
    private func streamOnce(
        _ id: SessionID, progress: StreamProgress, _ handler: @Sendable (Event) async throws -> Bool
    ) async throws -> Bool {
        var stream = request(
            .get, "/v1/sessions/\(id)/events/stream" + Self.query(["from": String(progress.next)]), timeout: nil)
        if progress.next > 1 { stream.headers.set("Last-Event-ID", String(progress.next - 1)) }
        stream.headers.set("Accept", "text/event-stream")
        return try await http.withStreamingResponse(stream) { head, body in
            guard head.status == 200 else {
                throw Self.error(status: head.status, body: try await body.collect(upTo: 1 << 20))
            }
            progress.connected()
            var parser = ServerSentEventParser()
            for try await chunk in body {
                progress.touch()
                for frame in try parser.feed(chunk) {
                    let event: Event
                    do {
                        event = try Event(json: ExactJSON.parse(Array(frame.data.utf8)))
                    } catch {
                        throw CorralError(
                            .internalError, "the service sent an event that is not one: \(frame.data.prefix(200))")
                    }
                    // A reconnect resumes after the last event handed over: skip any repeat.
                    guard event.seq >= progress.next else { continue }
                    progress.handed(event.seq)
                    let goOn: Bool
                    do {
                        goOn = try await handler(event)
                    } catch {
                        throw HandlerFailure(error: error)
                    }
                    if !goOn { return true }
                }
            }
            return false
        }
    }
}

/// An error the caller's handler threw: passed on as it is, never retried.
private struct HandlerFailure: Error {
    let error: any Error
}

/// What one tail has seen, shared by its reader and its idle watchdog.
private final class StreamProgress: Sendable {
    private struct State {
        var next: UInt64
        var lastActivity = ContinuousClock.now
        var connected = false
    }

    private let state: Mutex<State>

    init(next: UInt64) {
        state = Mutex(State(next: next))
    }

    var next: UInt64 { state.withLock { $0.next } }

    func handed(_ seq: UInt64) { state.withLock { $0.next = seq + 1 } }

    func touch() { state.withLock { $0.lastActivity = .now } }

    func connected() {
        state.withLock {
            $0.connected = true
            $0.lastActivity = .now
        }
    }

    /// Whether a connection was made since the last call.
    func takeConnected() -> Bool {
        state.withLock { state in
            defer { state.connected = false }
            return state.connected
        }
    }

    /// Returns (throwing) once nothing has arrived for `limit`.
    func watchIdle(limit: Duration) async throws {
        touch()
        while true {
            let deadline = state.withLock { $0.lastActivity } + limit
            if ContinuousClock.now >= deadline {
                throw CorralError(.timeout, "nothing arrived on the event stream for \(limit.compactDescription)")
            }
            try await Task.sleep(until: deadline, clock: .continuous)
        }
    }
}
