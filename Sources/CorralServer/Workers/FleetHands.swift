import CorralAPI
import CorralCore
import CorralFleet
import CorralHarness
import CorralHost
import CorralSandbox
import Foundation
import HTTPTypes
import NIOCore

/// The harness's hands on a control plane with workers: a session's sandbox is placed as a
/// tenant's `POST /v1/sandboxes` is (`CorralServer.place`), on this host (`SandboxHands`) or on
/// a worker, where its tool calls go over the worker's link. A call whose answer the link lost
/// is `HandOutcomeUnknown`; a sandbox whose worker was lost reports itself lost, and the harness
/// replaces it, elsewhere if need be.
final class FleetHands: HandProvisioner {
    let local: SandboxHands
    let fleet: WorkerFleet
    let server: CorralServer

    init(local: SandboxHands, fleet: WorkerFleet, server: CorralServer) {
        self.local = local
        self.fleet = fleet
        self.server = server
    }

    var tools: [any SandboxTool] { local.tools }

    /// A template or repository this host cannot serve may still be a worker's to serve:
    /// placement says so when the sandbox is made.
    func check(_ spec: HandSpec) throws {
        do {
            try local.check(spec)
        } catch let error as CorralError where error.code == .notFound || error.code == .unavailable {
            let offered = fleet.summaries().contains { worker in
                worker.state == "connected" && (spec.template.map(worker.templates.contains) ?? true)
            }
            guard offered else { throw error }
        }
    }

    func provision(_ request: HandRequest) async throws -> ProvisionedHand {
        switch try await server.place(tenant: request.tenant, template: request.spec.template, fleet: fleet) {
        case .local, .down, .lost:
            return try await local.provision(request)
        case .worker(let name, let link):
            var provision = try local.provisionRequest(for: request)
            // The session lives on the control plane, not on the worker: a label names it there.
            provision.session = nil
            provision.labels["session"] = request.session.rawValue
            let body = try JSONEncoder().encode(CreateSandboxRequest(provision))
            let started = ContinuousClock.now
            var head = link.request(.post, "/v1/sandboxes", tenant: request.tenant)
            head.headerFields[.contentType] = "application/json"
            let (status, bytes) = try await Self.exchange(link, head, body: Array(body))
            guard status == 201 else { throw Self.error(status: status, bytes) }
            let created = try CorralClient.decoder().decode(CreatedSandbox.self, from: Data(bytes))
            fleet.recordPlacement(created.id, on: name, tenant: request.tenant)
            return ProvisionedHand(
                hand: RemoteHand(sandboxID: created.id, tenant: request.tenant, fleet: fleet),
                path: created.path, milliseconds: (ContinuousClock.now - started).milliseconds)
        }
    }

    func reattach(_ sandbox: SandboxID, request: HandRequest) -> any Hand {
        // A sandbox no worker has reported yet, and that this host does not hold, may be on a
        // worker that has not sent its first heartbeat to a control plane just started: its
        // hand waits for that (`settledRoute`) rather than taking it for gone.
        if case .local = fleet.route(sandbox),
            !fleet.isWarmingUp || (try? server.provisioner.records().read(sandbox)) != nil
        {
            return local.reattach(sandbox, request: request)
        }
        return RemoteHand(sandboxID: sandbox, tenant: request.tenant, fleet: fleet)
    }

    func discard(_ sandbox: SandboxID, request: HandRequest) async {
        switch fleet.route(sandbox) {
        case .local:
            await local.discard(sandbox, request: request)
        case .worker(_, let link):
            try? await WorkerRoutingMiddleware.remove(WorkerSandbox(id: sandbox, tenant: request.tenant), on: link)
            fleet.forget(sandbox)
        case .down, .lost:
            // The worker removes it when it comes back (the control plane gave it up).
            break
        }
    }

    /// One whole call on a link: the answer's status and body (at most 16 MiB).
    static func exchange(_ link: WorkerLinkClient, _ head: HTTPRequest, body: [UInt8]?) async throws -> (Int, [UInt8]) {
        let (response, answer, task) = try await link.call(
            head, body: WorkerRoutingMiddleware.once(body.map { ByteBuffer(bytes: $0) }))
        var bytes: [UInt8] = []
        while let chunk = try await answer.receive() {
            bytes += chunk
            guard bytes.count <= 16 << 20 else {
                task.cancel()
                throw CorralError(.payloadTooLarge, "a worker's answer is larger than 16 MiB")
            }
        }
        _ = try? await task.value
        return (response.status.code, bytes)
    }

    static func error(status: Int, _ bytes: [UInt8]) -> CorralError {
        (try? JSONDecoder().decode(APIErrorBody.self, from: Data(bytes)))?.corralError
            ?? CorralError(.unavailable, "the worker answered with HTTP \(status)")
    }
}

/// A session's sandbox on a worker, reached through the control plane's link to it.
struct RemoteHand: Hand {
    let sandboxID: SandboxID
    let tenant: TenantID
    let fleet: WorkerFleet

    func execute(tool: String, input: JSONValue) async throws -> ToolOutput {
        let route = await fleet.settledRoute(sandboxID)
        if let error = fleet.unreachable(sandboxID, route) { return .error("[corral] \(error.description)") }
        guard case .worker(let name, let link) = route else {
            return .error("[corral] sandbox \(sandboxID) is not on any connected worker")
        }
        var head = link.request(.post, "/v1/sandboxes/\(sandboxID)/execute", tenant: tenant)
        head.headerFields[.contentType] = "application/json"
        let body = try JSONEncoder().encode(ExecuteRequest(name: tool, input: input))
        let status: Int
        let bytes: [UInt8]
        do {
            // Sent: from here on, a broken link means nobody knows whether it ran.
            (status, bytes) = try await FleetHands.exchange(link, head, body: Array(body))
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw HandOutcomeUnknown(reason: "the link to worker '\(name)' broke while the call ran (\(error))")
        }
        guard status == 200 else { return .error("[corral] \(FleetHands.error(status: status, bytes).description)") }
        do {
            return try CorralClient.decoder().decode(ToolOutput.self, from: Data(bytes))
        } catch {
            return .error("[corral] could not read worker '\(name)''s answer: \(error)")
        }
    }

    func liveness() async -> HandLiveness {
        let route = await fleet.settledRoute(sandboxID)
        switch route {
        case .lost(let name):
            return .lost(reason: "its worker '\(name)' was lost (silent past the grace), and its files with it")
        case .down(let name):
            return .unknown(reason: "the link to its worker '\(name)' is down")
        case .local:
            // Past the warm-up no worker has reported it: its worker is gone, or it is.
            return .lost(reason: "no worker has reported it since this control plane started")
        case .worker(_, let link):
            do {
                let (status, bytes) = try await FleetHands.exchange(
                    link, link.request(.get, "/v1/sandboxes/\(sandboxID)", tenant: tenant), body: nil)
                if status == 404 { return .lost(reason: "its container no longer exists") }
                guard status == 200 else {
                    return .unknown(reason: FleetHands.error(status: status, bytes).description)
                }
                let info = try CorralClient.decoder().decode(SandboxInfo.self, from: Data(bytes))
                return info.state == "running" ? .running : .lost(reason: "its container is \(info.state)")
            } catch {
                return .unknown(reason: "\(error)")
            }
        }
    }
}
