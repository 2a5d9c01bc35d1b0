import CorralAPI
import CorralCore
import CorralLink
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// Where workers dial in (`[workers] listen`): a TCP listener of its own, with TLS unless it is
/// on loopback. Each connection is one handshake (`GET /v1/workers/connect` with a worker token
/// and the worker's protocol range), then, after a 101, one HTTP/2 connection on which corrald
/// is the client (`WorkerLinkClient`).
public struct WorkerListener: Service {
    public struct Settings: Sendable {
        /// `host:port`.
        public var listen: String
        /// PEM files for TLS; required unless `listen` is on loopback.
        public var certificate: String?
        public var key: String?
        /// PEM certificates of the CA that signs workers' client certificates: when set, a
        /// worker must present one it signed (beside its token), or its TLS handshake fails.
        public var clientCA: String?
        /// The URL workers dial for this replica, published to the other replicas
        /// (`[workers] advertise`); nil: the listener's own address, unless it is a wildcard.
        public var advertise: String?
        /// A handshake must be done within this time.
        public var handshakeTimeout: Duration = .seconds(10)
        public var fleet = WorkerFleet.Settings()

        public init(listen: String) { self.listen = listen }
    }

    package let settings: Settings
    package let fleet: WorkerFleet
    package let tokens: WorkerTokenRegistry
    package let onReady: @Sendable (String) async -> Void
    package let logger: Logger
    /// The replicas that share the store, when there are (PostgreSQL); nil: this control plane
    /// is the only one.
    package let directory: ReplicaDirectory?

    package static let readerName = LinkAccepted.readerName

    package init(
        settings: Settings, fleet: WorkerFleet, tokens: WorkerTokenRegistry, directory: ReplicaDirectory? = nil,
        logger: Logger, onReady: @escaping @Sendable (String) async -> Void
    ) {
        self.directory = directory
        self.settings = settings
        self.fleet = fleet
        self.tokens = tokens
        self.logger = logger
        self.onReady = onReady
    }

    package typealias Accepted = LinkAccepted

    public func run() async throws {
        let (host, port) = try ListenAddress.parse(settings.listen)
        let tls = try Self.makeTLS(settings, host: host)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                    }
                    let promise = channel.eventLoop.makePromise(of: LinkHead.self)
                    try channel.pipeline.syncOperations.addHandler(
                        LinkHeadReader(promise: promise, readsBody: false), name: Self.readerName)
                    return Accepted(channel: channel, head: promise.futureResult)
                }
            }
        let address = "\(tls == nil ? "http" : "https")://\(host):\(server.channel.localAddress?.port ?? port)"
        logger.info("listening for workers", metadata: ["address": "\(address)"])
        let advertised = try ReplicaDirectory.workerURL(advertise: settings.advertise, bound: address)
        if directory != nil, advertised == nil {
            logger.warning(
                "the worker port listens on every interface and [workers] advertise is not set: workers reach this replica only through their --server",
                metadata: ["address": "\(address)"])
        }
        await onReady(address)
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                if let directory {
                    group.addTask { await self.publish(to: directory, url: advertised) }
                }
                try await server.executeThenClose { inbound in
                    for try await accepted in inbound {
                        group.addTask { await self.handshake(accepted) }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
            // The links end too (their heartbeats with them); the workers dial the next process.
            fleet.closeAll()
        }
        if let directory { try? await directory.withdraw(id: fleet.replica) }
    }

    /// Writes this replica's directory entry every heartbeat (at least three times per grace),
    /// and takes the others' in, until
    /// the listener stops.
    private func publish(to directory: ReplicaDirectory, url: String?) async {
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            do {
                let entries = try await directory.publish(
                    .init(id: fleet.replica, url: url, workers: fleet.linkedWorkers()))
                fleet.took(directory: entries)
            } catch {
                logger.warning("could not publish this replica to the others", metadata: ["error": "\(error)"])
            }
            // At least three times per grace, the window the others' entries are fresh within.
            try? await cancelWhenGracefulShutdown {
                try await Task.sleep(for: min(fleet.settings.heartbeat, fleet.settings.grace / 3))
            }
        }
    }

    package static func makeTLS(_ settings: Settings, host: String) throws -> NIOSSLContext? {
        if (settings.certificate == nil) != (settings.key == nil) {
            throw CorralError.invalidArgument(
                "[workers] tls_cert and tls_key go together", hint: "set both (PEM files), or neither on loopback")
        }
        guard let certificate = settings.certificate, let key = settings.key else {
            if let clientCA = settings.clientCA {
                throw CorralError.invalidArgument(
                    "[workers] client_ca \(clientCA) needs TLS", hint: "set [workers] tls_cert and tls_key (PEM) too")
            }
            guard ListenAddress.isLoopback(host) else {
                throw CorralError.invalidArgument(
                    "[workers] listen = \"\(settings.listen)\" is not on loopback and has no TLS",
                    hint: "set [workers] tls_cert and tls_key (PEM), or listen on 127.0.0.1")
            }
            return nil
        }
        var configuration: TLSConfiguration
        do {
            configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
        } catch {
            throw CorralError(
                .invalidArgument, "cannot use [workers] tls_cert \(certificate) and tls_key \(key): \(error)")
        }
        if let clientCA = settings.clientCA {
            // A worker's certificate is checked against the CA, not against a host name: workers
            // dial from addresses nobody names.
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCA))
            } catch {
                throw CorralError(.invalidArgument, "cannot read [workers] client_ca \(clientCA): \(error)")
            }
            configuration.certificateVerification = .noHostnameVerification
        }
        return try NIOSSLContext(configuration: configuration)
    }

    // MARK: One worker's handshake

    private func handshake(_ accepted: Accepted) async {
        let channel = accepted.channel
        let address = channel.remoteAddress.map { "\($0)" }
        let timeout = channel.eventLoop.scheduleTask(
            in: .milliseconds(Int64(settings.handshakeTimeout.milliseconds.rounded(.up)))
        ) {
            channel.close(promise: nil)
        }
        let head: LinkHead
        do {
            head = try await accepted.head.get()
        } catch let error as NIOSSLError {
            timeout.cancel()
            // With [workers] client_ca, a worker without a certificate its CA signed ends here.
            logger.warning(
                "refused a worker: TLS failed",
                metadata: [
                    "address": "\(address ?? "?")", "error": "\(error)",
                    "client_ca": "\(settings.clientCA ?? "-")",
                ])
            return
        } catch {
            timeout.cancel()
            logger.info("a worker's handshake failed", metadata: ["address": "\(address ?? "?")", "error": "\(error)"])
            return
        }
        timeout.cancel()
        switch await admit(head) {
        case .refused(let status, let error, let extra):
            logger.warning(
                "refused a worker", metadata: ["address": "\(address ?? "?")", "reason": "\(error.message)"])
            await refuse(channel, status: status, error: error, headers: extra)
        case .admitted(let name, let group, let version, let protocolVersion, let tokenID):
            if settings.clientCA != nil {
                // The TLS handshake is over (the head came after it): the certificate is there.
                let certificate = try? await channel.nioSSL_peerCertificate().get()
                let names = certificate.map(WorkerCertificate.names(in:)) ?? []
                if let error = WorkerCertificate.refusal(names: names, group: group, worker: name) {
                    logger.warning(
                        "refused a worker", metadata: ["address": "\(address ?? "?")", "reason": "\(error.message)"])
                    await refuse(channel, status: (403, "Forbidden"), error: error, headers: [])
                    return
                }
            }
            if let joined = fleet.group(ofWorker: name), joined != group {
                let error = CorralError(
                    .conflict, "a worker named '\(name)' is in group '\(joined)'; this one's token is for '\(group)'",
                    hint: "give this worker another --name")
                logger.warning(
                    "refused a worker", metadata: ["address": "\(address ?? "?")", "reason": "\(error.message)"])
                await refuse(channel, status: (409, "Conflict"), error: error, headers: [])
                return
            }
            let epoch = fleet.nextEpoch()
            let answer = LinkHead(
                startLine: ["HTTP/1.1", "101", "Switching Protocols"],
                headers: [
                    ("Connection", "Upgrade"), ("Upgrade", WorkerProtocol.upgradeToken),
                    (WorkerProtocol.protocolHeader, String(protocolVersion)),
                    (WorkerProtocol.epochHeader, String(epoch)),
                    (WorkerProtocol.groupHeader, group),
                    (WorkerProtocol.versionHeader, CorralVersion.current),
                    (WorkerProtocol.replicaHeader, fleet.replica),
                ])
            do {
                try await channel.writeAndFlush(answer.serialized())
                let link = try await channel.eventLoop.submit {
                    let link = try WorkerLinkClient(channel: channel, epoch: epoch, worker: name, logger: logger)
                    _ = channel.pipeline.syncOperations.removeHandler(name: Self.readerName)
                    return link
                }.get()
                fleet.attach(
                    .init(
                        name: name, group: group, version: version, protocolVersion: protocolVersion, epoch: epoch,
                        address: address, connected: Date(), link: link))
                await fleet.followHeartbeats(name: name, epoch: epoch) { [tokens] in await tokens.isKept(id: tokenID) }
            } catch {
                logger.warning("a worker's link failed to start", metadata: ["worker": "\(name)", "error": "\(error)"])
                channel.close(promise: nil)
            }
        }
    }

    package enum Admission {
        case admitted(name: String, group: String, version: String, protocolVersion: Int, token: String)
        case refused(status: (Int, String), CorralError, headers: [(String, String)])
    }

    /// Decides on a worker's request: the path and upgrade, its token, its group, its name,
    /// and a protocol version both sides speak.
    package func admit(_ head: LinkHead) async -> Admission {
        let ours = [(WorkerProtocol.protocolHeader, WorkerProtocol.format(WorkerProtocol.versions))]
        guard head.startLine.count == 3, head.startLine[0] == "GET", head.startLine[1] == WorkerProtocol.connectPath,
            head.header("Upgrade")?.lowercased() == WorkerProtocol.upgradeToken
        else {
            return .refused(
                status: (400, "Bad Request"),
                CorralError.invalidArgument(
                    "this is corral's worker port: it takes `GET \(WorkerProtocol.connectPath)` with `Upgrade: \(WorkerProtocol.upgradeToken)` from `corral worker`"
                ), headers: [])
        }
        guard let authorization = head.header("Authorization"), authorization.lowercased().hasPrefix("bearer ") else {
            return .refused(
                status: (401, "Unauthorized"),
                CorralError(
                    .unauthenticated, "a worker needs a token",
                    hint: "`corral worker token add --group G` on the control plane makes one"), headers: [])
        }
        let token = String(authorization.dropFirst("bearer ".count)).trimmingCharacters(in: .whitespaces)
        let entry: WorkerTokenRegistry.Entry
        do {
            guard let found = try await tokens.entry(forToken: token) else {
                return .refused(
                    status: (401, "Unauthorized"),
                    CorralError(
                        .unauthenticated, "the worker token is not valid",
                        hint: "`corral worker token add --group G` on the control plane makes a new one"), headers: [])
            }
            entry = found
        } catch {
            return .refused(
                status: (503, "Service Unavailable"), CorralError(converting: error) ?? CorralError(.io, "\(error)"),
                headers: [])
        }
        let group = entry.group
        if let asked = head.header(WorkerProtocol.groupHeader), !asked.isEmpty, asked != group {
            return .refused(
                status: (403, "Forbidden"),
                CorralError(
                    .permissionDenied, "this worker token is for group '\(group)', not '\(asked)'",
                    hint: "start the worker with --group \(group), or make a token for '\(asked)'"), headers: [])
        }
        guard let name = head.header(WorkerProtocol.nameHeader), Self.isValidName(name) else {
            return .refused(
                status: (400, "Bad Request"),
                CorralError.invalidArgument(
                    "a worker's name is 1 to 63 of a-z, 0-9, '.', '-' and '_'",
                    hint: "start the worker with --name NAME"),
                headers: [])
        }
        let offered = head.header(WorkerProtocol.protocolHeader).flatMap(WorkerProtocol.parse)
        guard let offered, let chosen = WorkerProtocol.negotiate(offered) else {
            let theirs = head.header(WorkerProtocol.protocolHeader) ?? "none"
            return .refused(
                status: (426, "Upgrade Required"),
                CorralError(
                    .unsupported,
                    "this control plane speaks worker protocol \(WorkerProtocol.format(WorkerProtocol.versions)); the worker speaks \(theirs)",
                    hint: "run the same corral release on the worker and the control plane"), headers: ours)
        }
        return .admitted(
            name: name, group: group, version: head.header(WorkerProtocol.versionHeader) ?? "unknown",
            protocolVersion: chosen, token: entry.id)
    }

    package static func isValidName(_ name: String) -> Bool {
        (1...63).contains(name.utf8.count)
            && name.utf8.allSatisfy {
                ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x2E || $0 == 0x5F
            }
    }

    private func refuse(
        _ channel: any Channel, status: (Int, String), error: CorralError, headers extra: [(String, String)]
    ) async {
        let body = (try? JSONEncoder().encode(APIErrorBody(error))) ?? Data()
        var answer = LinkHead(
            startLine: ["HTTP/1.1", String(status.0), status.1],
            headers: [
                ("Content-Type", "application/json"), ("Content-Length", String(body.count)), ("Connection", "close"),
            ] + extra)
        answer.body = Array(body)
        try? await channel.writeAndFlush(answer.serialized())
        try? await channel.close()
    }
}

/// What a worker's client certificate may say about who it is. With `[workers] client_ca`, a
/// certificate binds its holder to a group and a name through a URI subject alternative name
/// `corral-worker://GROUP/NAME` (NAME `*`: any worker of the group), so that a certificate
/// taken from one worker does not admit another, even with a valid token.
package enum WorkerCertificate {
    package static let scheme = "corral-worker://"

    /// The `corral-worker://` names of `certificate`.
    package static func names(in certificate: NIOSSLCertificate) -> [String] {
        certificate._subjectAlternativeNames().compactMap { name in
            guard name.nameType == .uri else { return nil }
            let uri = String(decoding: name.contents, as: UTF8.self)
            return uri.hasPrefix(scheme) ? uri : nil
        }
    }

    /// Why a certificate naming `names` does not admit worker `worker` of `group`; nil when it
    /// does.
    package static func refusal(names: [String], group: String, worker: String) -> CorralError? {
        let admits = names.contains { uri in
            let path = uri.dropFirst(scheme.count).split(separator: "/", omittingEmptySubsequences: false)
            return path.count == 2 && path[0] == group && (path[1] == worker || path[1] == "*")
        }
        guard !admits else { return nil }
        let hint =
            "issue the worker a certificate with subjectAltName = URI:\(scheme)\(group)/\(worker) (or \(scheme)\(group)/* for any worker of the group)"
        guard !names.isEmpty else {
            return CorralError(
                .permissionDenied, "the worker's client certificate names no corral worker (\(scheme)GROUP/NAME)",
                hint: hint)
        }
        return CorralError(
            .permissionDenied,
            "the worker's client certificate is for \(names.joined(separator: ", ")), not worker '\(worker)' of group '\(group)'",
            hint: hint)
    }
}
