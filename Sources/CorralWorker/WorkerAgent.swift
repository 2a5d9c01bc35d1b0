import CorralAPI
import CorralCore
import CorralHost
import CorralLink
import CorralSandbox
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
import Logging
import NIOCore
import NIOHTTP2
import NIOHTTPTypes
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// The worker's end of its link (`corral worker`): it dials the control plane, asks for the
/// upgrade with its token and protocol range, and, after the 101, serves corral's own API as an
/// HTTP/2 server on the connection it opened, one stream per call. It accepts no inbound
/// connection. A link that ends is dialled again with backoff (1 s doubling to 30 s); a refusal
/// that another try cannot mend (token, group, protocol) stops the worker with its reason.
///
/// Control-plane replicas that share a store tell their workers each other's addresses
/// (`PUT /v1/worker/replicas`); the worker keeps one link to each, so that every replica calls
/// it directly. `--server` is the door: it is dialled while no link is up (a load balancer's
/// address does; so does any one replica's).
public struct WorkerAgent: Service {
    public struct Settings: Sendable {
        /// `https://host:port` (or `http://` on loopback): the control plane's worker port.
        public var server: String
        public var token: String
        /// The group to join; the token decides it, this only checks it.
        public var group: String?
        public var name: String
        /// PEM certificates that verify the control plane; nil: the system's roots.
        public var caFile: String?
        /// PEM files of this worker's client certificate, for a control plane that asks for one
        /// (`[workers] client_ca`).
        public var certificateFile: String?
        public var keyFile: String?
        public var maxSandboxes = 64
        public var connectTimeout: Duration = .seconds(5)
        public var handshakeTimeout: Duration = .seconds(10)
        public var longestBackoff: Duration = .seconds(30)

        public init(server: String, token: String, name: String) {
            self.server = server
            self.token = token
            self.name = name
        }
    }

    let settings: Settings
    /// The routes this engine host serves on its link.
    let host: HostAPI
    let logger: Logger
    let onConnected: @Sendable (String) async -> Void
    /// The links up now, and the replicas they told of.
    private let links = ReplicaLinks()
    private let group = LinkGroup()
    private let snapshot = StatusSnapshot()

    public init(
        settings: Settings, host: HostAPI, logger: Logger,
        onConnected: @escaping @Sendable (String) async -> Void = { _ in }
    ) {
        self.settings = settings
        self.host = host
        self.logger = logger
        self.onConnected = onConnected
    }

    /// Calls one link carries at once (HTTP/2 streams the worker accepts).
    static let maxConcurrentCalls = 4096
    /// The largest HTTP/2 frame either end of a link takes (the protocol's default is 16 KiB).
    static let maxFrameSize = WorkerLinkLimits.maxFrameSize

    /// A refusal no retry mends.
    struct Refused: Error, CustomStringConvertible {
        let error: CorralError
        var description: String { error.description }
    }

    public func run() async throws {
        let door = try Target(settings.server)
        let doorTLS = try makeTLS(door)
        // The heartbeat's answer comes from a snapshot kept fresh here, so that a slow engine
        // (a listing under load can take seconds) never makes a live worker look silent.
        let refresher = Task { [self] in
            while !Task.isCancelled {
                let started = ContinuousClock.now
                snapshot.set(await computeStatus(), started: started)
                try? await Task.sleep(for: .seconds(1))
            }
        }
        defer { refresher.cancel() }
        let links = self.links
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                defer { links.finish() }
                try await dialAgain(door, url: settings.server, key: ReplicaLinks.door, tls: doorTLS)
            }
            // Each replica a link tells of gets a loop of its own, until none tells of it.
            for await _ in links.changes {
                for url in links.toDial() {
                    group.addTask { [self] in
                        defer { links.stoppedDialling(url) }
                        do {
                            let target = try Target(url)
                            try await dialAgain(target, url: url, key: url, tls: try makeTLS(target))
                        } catch {
                            logger.warning(
                                "stopped dialling a control-plane replica: \(error)",
                                metadata: ["worker": "\(settings.name)", "replica": "\(url)"])
                        }
                    }
                }
            }
            group.cancelAll()
            try await group.waitForAll()
        }
    }

    /// Dials `target` until the worker stops: again with backoff when the link ends. `key` names
    /// the link among the worker's (a told replica's URL, or `ReplicaLinks.door`). The door
    /// waits while another link is up; a told replica's loop ends once no link tells of it,
    /// and waits while its replica is linked through the door. A refusal no retry mends ends
    /// the loop with its error.
    private func dialAgain(_ target: Target, url: String, key: String, tls: NIOSSLContext?) async throws {
        let listed = key != ReplicaLinks.door
        var delay = Duration.seconds(1)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if listed {
                guard links.isListed(url) else { return }
            }
            let seen = links.version
            if listed ? links.isLinkedElsewhere(url) : links.anyUp {
                await cancelWhenGracefulShutdown { await links.changed(after: seen) }
                continue
            }
            let started = ContinuousClock.now
            do {
                try await connectOnce(target, url: url, key: key, tls: tls)
            } catch let refused as Refused {
                throw refused.error
            } catch {
                logger.warning(
                    "worker link to \(url) ended: \(error); dialling again in \(delay)",
                    metadata: ["worker": "\(settings.name)"])
            }
            if ContinuousClock.now - started > settings.longestBackoff { delay = .seconds(1) }
            try? await gracefulSleep(for: delay)
            delay = min(delay * 2, settings.longestBackoff)
        }
    }

    /// Sleeps, or returns at once when a graceful shutdown begins.
    private func gracefulSleep(for duration: Duration) async throws {
        try await cancelWhenGracefulShutdown { try await Task.sleep(for: duration) }
    }

    // MARK: The control plane's address

    public struct Target: Sendable {
        public var secure: Bool
        var host: String
        var port: Int

        public init(_ text: String) throws {
            guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), let host = url.host,
                scheme == "http" || scheme == "https"
            else {
                throw CorralError.invalidArgument(
                    "'\(text)' is not a control plane URL", hint: "use https://HOST:PORT (http:// on loopback only)")
            }
            secure = scheme == "https"
            self.host = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
            port = url.port ?? (secure ? 443 : 80)
            guard secure || ListenAddress.isLoopback(self.host) else {
                throw CorralError.invalidArgument(
                    "plain http:// is for loopback only; '\(text)' is not", hint: "use https:// with --ca FILE")
            }
        }
    }

    private func makeTLS(_ target: Target) throws -> NIOSSLContext? {
        if (settings.certificateFile == nil) != (settings.keyFile == nil) {
            throw CorralError.invalidArgument("--cert and --key go together", hint: "pass both PEM files, or neither")
        }
        guard target.secure else {
            if settings.certificateFile != nil {
                throw CorralError.invalidArgument(
                    "a client certificate needs TLS", hint: "use https:// for --server, or drop --cert and --key")
            }
            return nil
        }
        var configuration = TLSConfiguration.makeClientConfiguration()
        if let certificateFile = settings.certificateFile, let keyFile = settings.keyFile {
            do {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map {
                    .certificate($0)
                }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            } catch {
                throw CorralError.invalidArgument("cannot use --cert \(certificateFile) and --key \(keyFile): \(error)")
            }
        }
        if let caFile = settings.caFile {
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            } catch {
                throw CorralError.invalidArgument("cannot read --ca \(caFile): \(error)")
            }
        }
        return try NIOSSLContext(configuration: configuration)
    }

    // MARK: One link

    private func connectOnce(_ target: Target, url: String, key: String, tls: NIOSSLContext?) async throws {
        let name = settings.name
        let accepted = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(.milliseconds(Int64(settings.connectTimeout.milliseconds)))
            .connect(host: target.host, port: target.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(
                                context: tls, serverHostname: ListenAddress.isIPAddress(target.host) ? nil : target.host
                            )
                        )
                    }
                    let promise = channel.eventLoop.makePromise(of: LinkHead.self)
                    try channel.pipeline.syncOperations.addHandler(
                        LinkHeadReader(promise: promise, readsBody: true), name: LinkAccepted.readerName)
                    return LinkAccepted(channel: channel, head: promise.futureResult)
                }
            }
        let channel = accepted.channel
        var headers: [(String, String)] = [
            ("Host", "\(target.host):\(target.port)"), ("Connection", "Upgrade"),
            ("Upgrade", WorkerProtocol.upgradeToken), ("Authorization", "Bearer \(settings.token)"),
            (WorkerProtocol.nameHeader, name),
            (WorkerProtocol.protocolHeader, WorkerProtocol.format(WorkerProtocol.versions)),
            (WorkerProtocol.versionHeader, CorralVersion.current),
        ]
        if let group = settings.group { headers.append((WorkerProtocol.groupHeader, group)) }
        let request = LinkHead(startLine: ["GET", WorkerProtocol.connectPath, "HTTP/1.1"], headers: headers)
        let timeout = channel.eventLoop.scheduleTask(in: .milliseconds(Int64(settings.handshakeTimeout.milliseconds))) {
            channel.close(promise: nil)
        }
        let answer: LinkHead
        do {
            do {
                try await channel.writeAndFlush(request.serialized())
            } catch {
                // The connection's own failure (a TLS handshake the worker refused) says more
                // than the write's "closed channel".
                _ = try await accepted.head.get()
                throw error
            }
            answer = try await accepted.head.get()
            timeout.cancel()
        } catch  where error is NIOSSLError || error is BoringSSLError {
            // A refused client certificate comes after TLS 1.3's handshake, as an alert on the
            // first read (a BoringSSLError), not as a handshake failure.
            timeout.cancel()
            channel.close(promise: nil)
            let refusedCertificate = "\(error)".contains("CERTIFICATE_REQUIRED") || "\(error)".contains("UNKNOWN_CA")
            throw CorralError(
                .unavailable, "TLS with the control plane failed: \(error)",
                hint: refusedCertificate
                    ? "the control plane asks for a client certificate ([workers] client_ca): pass --cert and --key, signed by its CA"
                    : "check that --ca holds the CA that signed the control plane's certificate, for this address")
        } catch {
            timeout.cancel()
            channel.close(promise: nil)
            throw error
        }
        guard answer.status == 101 else {
            channel.close(promise: nil)
            throw Self.refusal(answer)
        }
        guard let linkEpoch = answer.header(WorkerProtocol.epochHeader).flatMap(Int64.init),
            let version = answer.header(WorkerProtocol.protocolHeader).flatMap(Int.init),
            WorkerProtocol.versions.contains(version)
        else {
            channel.close(promise: nil)
            throw Refused(
                error: CorralError(
                    .unsupported,
                    "the control plane switched to a worker protocol this worker does not speak (\(answer.header(WorkerProtocol.protocolHeader) ?? "none"); this worker speaks \(WorkerProtocol.format(WorkerProtocol.versions)))"
                ))
        }
        // Calls that carry another epoch than this link's are refused.
        let epoch = LinkEpoch(linkEpoch)
        // The token decides the group; the heartbeat reports the one the control plane chose.
        group.set(answer.header(WorkerProtocol.groupHeader))
        let replica = answer.header(WorkerProtocol.replicaHeader) ?? url
        links.up(replica: replica, via: key)
        defer { links.down(via: key) }
        let http2 = HTTP2Channel(
            responder: responder(epoch: epoch, key: key),
            configuration: .init(
                streamConfiguration: .init(additionalChannelHandlers: [StreamPresenceHandler()])))
        let logger = self.logger
        let value = try await channel.eventLoop.submit {
            let value = http2.setup(channel: channel, logger: logger)
            _ = channel.pipeline.syncOperations.removeHandler(name: LinkAccepted.readerName)
            // Hummingbird's HTTP/2 server announces swift-nio-http2's default of 100 concurrent
            // streams; one link carries every call of a host (long execs, attaches, the
            // heartbeat), so it announces more at once.
            channel.writeAndFlush(
                HTTP2Frame(
                    streamID: .rootStream,
                    payload: .settings(
                        .settings([
                            HTTP2Setting(parameter: .maxConcurrentStreams, value: Self.maxConcurrentCalls),
                            // Uploads (archives, files, stdin) in frames of up to 1 MiB.
                            HTTP2Setting(parameter: .maxFrameSize, value: Self.maxFrameSize),
                        ]))),
                promise: nil)
            return value
        }.get().get()
        logger.info(
            "worker link up",
            metadata: ["server": "\(url)", "replica": "\(replica)", "worker": "\(name)", "epoch": "\(linkEpoch)"])
        await onConnected(url)
        // A stop, or the end of the worker's other loops (the door refused), closes the link.
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await http2.handle(value: value, logger: logger)
            } onGracefulShutdown: {
                channel.close(promise: nil)
            }
        } onCancel: {
            channel.close(promise: nil)
        }
        throw CorralError(.unavailable, "the control plane closed the link")
    }

    /// The error a non-101 answer carries; a refusal no retry mends is `Refused`.
    static func refusal(_ answer: LinkHead) -> any Error {
        let status = answer.status ?? 0
        var error =
            (try? JSONDecoder().decode(APIErrorBody.self, from: Data(answer.body)))?.corralError
            ?? CorralError(.unavailable, "the control plane answered the worker's handshake with HTTP \(status)")
        if error.hint == nil, status == 404 {
            error.hint = "is --server the control plane's worker port ([workers] listen)?"
        }
        switch status {
        case 400, 401, 403, 404, 409, 426: return Refused(error: error)
        default: return error
        }
    }

    // MARK: What the worker serves

    private func responder(epoch: LinkEpoch, key: String) -> HTTPChannelHandler.Responder {
        let router = host.workerRouter(
            currentEpoch: { epoch.value }, status: { [self] in await self.status(epoch: epoch) },
            replicas: { [links] told in
                links.told(told.replicas, via: key)
                return told
            })
        let responder = router.buildResponder()
        let logger = self.logger
        return { request, responseWriter, channel in
            let context = CorralRequestContext(source: .init(channel: channel, logger: logger))
            let response: Response
            do {
                response = try await responder.respond(to: request, context: context)
            } catch {
                response = Response(status: .internalServerError)
            }
            try await responseWriter.write(response: response.head, body: response.body)
        }
    }

    /// The heartbeat's answer: the latest snapshot (at most a second or so old), with the link's
    /// epoch and group as they are now. The first on a new link is taken fresh: a control plane
    /// that restarted learns every sandbox from it, one made a moment before included.
    func status(epoch: LinkEpoch) async -> WorkerStatus {
        var status: WorkerStatus
        if let latest = snapshot.get(takenAfter: epoch.since) {
            status = latest
        } else {
            let started = ContinuousClock.now
            status = await computeStatus()
            snapshot.set(status, started: started)
        }
        status.epoch = epoch.value
        status.group = group.get() ?? settings.group ?? WorkerGroup.defaultName
        return status
    }

    /// What this engine host offers and runs now.
    func computeStatus() async -> WorkerStatus {
        var pools: [WorkerPoolStatus] = []
        for pool in host.pools { pools.append(WorkerPoolStatus(await pool.currentStatus())) }
        let sandboxes = (try? await host.provisioner.list()) ?? []
        return WorkerStatus(
            name: settings.name, group: group.get() ?? settings.group ?? WorkerGroup.defaultName,
            version: CorralVersion.current,
            epoch: 0,
            capacity: .init(
                cpus: ProcessInfo.processInfo.activeProcessorCount,
                memoryBytes: Int64(ProcessInfo.processInfo.physicalMemory), maxSandboxes: settings.maxSandboxes),
            templates: host.provisioner.configuration.templates.map(\.name.rawValue).sorted(), pools: pools,
            sandboxes: sandboxes.map { WorkerSandbox(id: $0.id, tenant: $0.tenant) })
    }
}

/// The epoch of one of a worker's links, and since when it is up.
struct LinkEpoch: Sendable {
    let value: Int64
    let since = ContinuousClock.now

    init(_ value: Int64) { self.value = value }
}

/// A worker's links to control-plane replicas: which replica each is up to, and the replicas
/// each told of (`PUT /v1/worker/replicas`). A link is named by the URL it dialled, or `door`.
final class ReplicaLinks: Sendable {
    /// The link dialled at `--server`.
    static let door = "--server"

    private struct State {
        /// Replica name to the name of the link up to it.
        var up: [String: String] = [:]
        /// A link's name to the replicas that link told of.
        var told: [String: [WorkerReplica]] = [:]
        /// URLs with a loop of their own (not the door's).
        var dialling: Set<String> = []
        /// Counts the changes to `up` and `told`, for `changed(after:)`.
        var version: UInt64 = 0
        /// Tasks waiting in `changed(after:)`, by a number of their own.
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
        /// Waiters cancelled before they were registered.
        var cancelled: Set<UInt64> = []

        /// Counts a change and returns the waiters to wake.
        mutating func changed() -> [CheckedContinuation<Void, Never>] {
            version += 1
            defer { waiters = [:] }
            return Array(waiters.values)
        }
    }

    private let state = Mutex(State())
    private let (changesStream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    /// Yields when a link tells of other replicas; ends with `finish`.
    var changes: AsyncStream<Void> { changesStream }

    func finish() { continuation.finish() }

    var anyUp: Bool { state.withLock { !$0.up.isEmpty } }

    /// Tasks waiting in `changed(after:)` now.
    var waiting: Int { state.withLock { $0.waiters.count } }

    /// Read before testing a condition, then passed to `changed(after:)` to wait for it to change.
    var version: UInt64 { state.withLock { $0.version } }

    /// Returns once a link went up or down or told of replicas after `version` was read, or
    /// when the task is cancelled.
    func changed(after version: UInt64) async {
        let id = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.version > version || state.cancelled.remove(id) != nil { return true }
                    state.waiters[id] = waiter
                    return false
                }
                if now { waiter.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                guard let waiter = state.waiters.removeValue(forKey: id) else {
                    state.cancelled.insert(id)
                    return nil as CheckedContinuation<Void, Never>?
                }
                return waiter
            }
            waiter?.resume()
        }
        state.withLock { _ = $0.cancelled.remove(id) }
    }

    func up(replica: String, via key: String) {
        wake(
            state.withLock { state in
                state.up[replica] = key
                return state.changed()
            })
    }

    func down(via key: String) {
        wake(
            state.withLock { state in
                state.up = state.up.filter { $0.value != key }
                state.told[key] = nil
                return state.changed()
            })
    }

    func told(_ replicas: [WorkerReplica], via key: String) {
        wake(
            state.withLock { state in
                state.told[key] = replicas
                return state.changed()
            })
        continuation.yield()
    }

    private func wake(_ waiters: [CheckedContinuation<Void, Never>]) {
        for waiter in waiters { waiter.resume() }
    }

    /// Whether a link up now tells of `url`.
    func isListed(_ url: String) -> Bool {
        state.withLock { $0.told.values.contains { $0.contains { $0.url == url } } }
    }

    /// Whether a replica listed at `url` is linked through another URL (the door's).
    func isLinkedElsewhere(_ url: String) -> Bool {
        state.withLock { state in
            let names = state.told.values.joined().filter { $0.url == url }.map(\.id)
            return names.contains { name in state.up[name].map { $0 != url } ?? false }
        }
    }

    /// The URLs told of that have no loop yet, now marked as having one.
    func toDial() -> [String] {
        state.withLock { state in
            let wanted = Set(state.told.values.joined().map(\.url)).subtracting(state.dialling)
            state.dialling.formUnion(wanted)
            return wanted.sorted()
        }
    }

    func stoppedDialling(_ url: String) {
        _ = state.withLock { $0.dialling.remove(url) }
    }
}

/// The group the control plane admitted a worker's link to.
final class LinkGroup: Sendable {
    private let value = Mutex<String?>(nil)

    func get() -> String? { value.withLock { $0 } }
    func set(_ group: String?) { value.withLock { $0 = group } }
}

/// The worker's latest status, refreshed in the background, and when its computing began.
final class StatusSnapshot: Sendable {
    private let value = Mutex<(status: WorkerStatus, started: ContinuousClock.Instant)?>(nil)

    /// The latest status whose computing began after `instant`, if there is one.
    func get(takenAfter instant: ContinuousClock.Instant) -> WorkerStatus? {
        value.withLock { $0.flatMap { $0.started > instant ? $0.status : nil } }
    }

    func set(_ status: WorkerStatus, started: ContinuousClock.Instant) {
        value.withLock { current in
            // A slower computation that began earlier does not replace a newer one.
            if let current, current.started > started { return }
            current = (status, started)
        }
    }
}
