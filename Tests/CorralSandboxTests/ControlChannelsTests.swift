import ControlProtocol
import CorralCore
import CorralSandbox
import Foundation
import Logging
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The host's end of the control connection against a peer on this machine: the key files,
/// the hello, and who may hold the connection. No engine needed.
@Suite("The control socket's key exchange, on the host")
struct ControlChannelsTests {
    // Security review finding 5: only a connection with the sandbox's key becomes the
    // sandbox's, a second one never displaces it, and corral-init's redial after its
    // connection died still gets in.
    @Test(
        "the key is kept 0600 beside the sandbox's directory and put 0444 in it; the right hello is welcomed and the key taken away; a second one is closed; a redial after the first closed is welcomed"
    )
    func keyExchange() async throws {
        try await withTemporaryDirectory { root in
            let sandbox = SandboxID.random()
            let directory = try Self.gatewayDirectory(root, sandbox)
            var configuration = ControlChannels.Configuration()
            configuration.helloDeadline = .seconds(1)
            let channels = ControlChannels(configuration: configuration, logger: Logger(label: "corral.test"))
            defer { channels.closeAll() }
            try await channels.listen(sandbox, directory: directory, newSandbox: true)

            let keyFile = directory.appendingPathComponent(ControlKey.fileName).path
            let secretFile = directory.deletingLastPathComponent().appendingPathComponent(ControlChannels.secretName)
            #expect(try Self.mode(keyFile) == 0o444)
            #expect(try Self.mode(secretFile.path) == 0o600)
            let key = try #require(ControlKey(hex: Array(try Data(contentsOf: URL(fileURLWithPath: keyFile)))))
            #expect(ControlKey(hex: Array(try Data(contentsOf: secretFile)))?.matches(key) == true)

            let socket = directory.appendingPathComponent(ControlChannels.socketName).path
            let first = try PeerSocket(path: socket)
            try first.send(Self.hello(key))
            #expect(try first.readKind() == ControlFrameKind.welcome.rawValue)
            #expect(await channels.waitForConnection(sandbox, timeout: .seconds(5)))
            #expect(!FileManager.default.fileExists(atPath: keyFile), "the key is taken away once used")

            // Even with the right key, a second hello does not displace the live connection.
            let second = try PeerSocket(path: socket)
            try second.send(Self.hello(key))
            #expect(try second.readKind() == nil, "closed, not welcomed")
            #expect(channels.isConnected(sandbox))

            // Once the first is gone, corral-init's redial is welcomed.
            first.close()
            let clock = ContinuousClock()
            let giveUp = clock.now + .seconds(5)
            while channels.isConnected(sandbox) && clock.now < giveUp { try await Task.sleep(for: .milliseconds(10)) }
            let redial = try PeerSocket(path: socket)
            try redial.send(Self.hello(key))
            #expect(try redial.readKind() == ControlFrameKind.welcome.rawValue)
            #expect(channels.isConnected(sandbox))
        }
    }

    @Test(
        "a process adopting a sandbox uses the key kept host-side and puts none in the sandbox's reach; without one it does not listen"
    )
    func adoption() async throws {
        try await withTemporaryDirectory { root in
            let (sandbox, directory, maker, key) = try await Self.madeSandbox(in: root)
            let keyFile = directory.appendingPathComponent(ControlKey.fileName).path
            // The maker goes away before corral-init said hello: the key goes with it.
            maker.closeAll()
            #expect(!FileManager.default.fileExists(atPath: keyFile))

            let adopter = ControlChannels(logger: Logger(label: "corral.test"))
            defer { adopter.closeAll() }
            try await adopter.listen(sandbox, directory: directory)
            #expect(!FileManager.default.fileExists(atPath: keyFile))
            let peer = try PeerSocket(path: directory.appendingPathComponent(ControlChannels.socketName).path)
            try peer.send(Self.hello(key))
            #expect(try peer.readKind() == ControlFrameKind.welcome.rawValue)

            let stranger = SandboxID.random()
            await #expect(throws: CorralError.self) {
                try await adopter.listen(stranger, directory: try Self.gatewayDirectory(root, stranger))
            }
            #expect(!adopter.isListening(stranger))
        }
    }

    // A listener bound through NIO unlinked its path when it closed: the maker's close, after
    // the adopter had bound the same path, took the adopter's socket file away (CI saw the
    // adopter's own chmod find no file, when the close came between its bind and its chmod).
    @Test("a listener that replaces another keeps its socket file when the other closes")
    func replacedListenerKeepsItsFile() async throws {
        try await withTemporaryDirectory { root in
            let (sandbox, directory, maker, key) = try await Self.madeSandbox(in: root)
            let adopter = ControlChannels(logger: Logger(label: "corral.test"))
            defer { adopter.closeAll() }
            try await adopter.listen(sandbox, directory: directory)
            await maker.closeAllAndWait()
            let socket = directory.appendingPathComponent(ControlChannels.socketName).path
            #expect(FileManager.default.fileExists(atPath: socket), "the maker's close took the adopter's file")
            #expect(try Self.mode(socket) == 0o666)
            let peer = try PeerSocket(path: socket)
            try peer.send(Self.hello(key))
            #expect(try peer.readKind() == ControlFrameKind.welcome.rawValue)
            #expect(adopter.isConnected(sandbox))
        }
    }

    /// A new sandbox's gateway directory under `root`, the channels of the process that made
    /// it (listening), and the key it issued.
    static func madeSandbox(in root: URL) async throws -> (SandboxID, URL, ControlChannels, ControlKey) {
        let sandbox = SandboxID.random()
        let directory = try gatewayDirectory(root, sandbox)
        let maker = ControlChannels(logger: Logger(label: "corral.test"))
        try await maker.listen(sandbox, directory: directory, newSandbox: true)
        let keyFile = directory.appendingPathComponent(ControlKey.fileName)
        let key = try #require(ControlKey(hex: Array(try Data(contentsOf: keyFile))))
        return (sandbox, directory, maker, key)
    }

    static func gatewayDirectory(_ root: URL, _ sandbox: SandboxID) throws -> URL {
        let directory = root.appendingPathComponent(sandbox.rawValue).appendingPathComponent("gateway")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    static func mode(_ path: String) throws -> Int? {
        try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
    }

    static func hello(_ key: ControlKey) -> [UInt8] {
        let payload = ControlHello(initVersion: "test", key: key).encoded()
        return ControlFrameHeader(.hello, id: 0, length: payload.count).bytes + payload
    }
}

/// A blocking unix-socket peer, as corral-init (or anyone in a sandbox) would dial. Only its
/// descriptor is shared, and tests use it from one thread at a time.
final class PeerSocket: @unchecked Sendable {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CorralError(.io, "socket: \(errno)") }
        // Wide: in a full parallel run on two cores the host may take seconds to send a frame.
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        // No close on failure: deinit runs for an init that throws once `fd` is set, and
        // closes it; a close here came twice, the second on a number another thread may
        // have been given meanwhile.
        guard connected == 0 else {
            throw CorralError(.io, "connect \(path): \(errno)")
        }
    }

    func send(_ bytes: [UInt8]) throws {
        let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == bytes.count else { throw CorralError(.io, "send: \(errno)") }
    }

    /// The kind of the next frame (its payload skipped); nil once the host closed the connection.
    func readKind() throws -> UInt8? {
        guard let header = try read(ControlFrameHeader.size), let parsed = ControlFrameHeader(parsing: header) else {
            return nil
        }
        _ = try read(parsed.length)
        return parsed.rawKind
    }

    /// The next frame whole; nil once the host closed the connection.
    func readFrame() throws -> (kind: UInt8, id: UInt32, payload: [UInt8])? {
        guard let header = try read(ControlFrameHeader.size), let parsed = ControlFrameHeader(parsing: header) else {
            return nil
        }
        guard let payload = try read(parsed.length) else { return nil }
        return (parsed.rawKind, parsed.id, payload)
    }

    private func read(_ count: Int) throws -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let got = buffer.withUnsafeMutableBytes { raw -> Int in
                guard let base = raw.baseAddress else { return -1 }
                return recv(fd, base + offset, count - offset, 0)
            }
            if got == 0 { return nil }
            if got < 0 {
                if errno == EINTR { continue }
                if errno == ECONNRESET { return nil }
                throw CorralError(.io, "recv: \(errno) (timed out: \(errno == EAGAIN))")
            }
            offset += got
        }
        return buffer
    }

    func close() { shutdown(fd, Int32(SHUT_RDWR)) }

    deinit { Glibc.close(fd) }
}
