import ArgumentParser
import CorralCore
import CorralSandbox
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

struct PortForwardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "port-forward",
        abstract: "Forward a local TCP port to a port a server listens on inside a sandbox.",
        discussion: """
            PORTS is LOCAL:REMOTE, or one port for both. corral listens on 127.0.0.1:LOCAL only, and each \
            connection it accepts becomes a command in the sandbox that dials 127.0.0.1:REMOTE there (the \
            sandbox keeps its loopback-only network): bytes go in as the command's stdin and come back as \
            its output, over the sandbox's control connection. Runs until interrupted. LOCAL 0 picks a free \
            port: the first line on stdout says which.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The sandbox id.")
    var id: String

    @Argument(help: ArgumentHelp("LOCAL:REMOTE, or PORT for both.", valueName: "PORTS"))
    var ports: String

    func run() async throws {
        let sandboxID = try parseSandboxID(id)
        let (local, remote) = try Self.parsePorts(ports)
        let backend = try await CommandContext(global).backend()
        defer { backend.shutdown() }
        // The sandbox must exist (and be this tenant's) before anything listens.
        _ = try await backend.info(sandboxID)
        let listener = try LoopbackListener(port: local)
        defer { listener.close() }
        // On stdout, as kubectl prints it, so that scripts can read the port LOCAL 0 got.
        FileHandle.standardOutput.write(Data("Forwarding from 127.0.0.1:\(listener.port) -> \(remote)\n".utf8))
        try await withThrowingTaskGroup(of: Void.self) { group in
            while true {
                let client = try await listener.accept()
                group.addTask {
                    await Self.relay(client, to: remote, in: sandboxID, backend: backend)
                }
            }
        }
    }

    /// One connection: a command in the sandbox that dials the port, fed with what the client
    /// sends; its output goes back to the client. Errors end this connection only.
    static func relay(_ client: Int32, to port: Int, in sandbox: SandboxID, backend: any SandboxBackend) async {
        let shared = SharedDescriptor(client)
        defer {
            // Wakes the thread still reading the client; whichever of the two ends last closes.
            shutdown(client, Int32(SHUT_RDWR))
            shared.release()
        }
        // bash's /dev/tcp dials inside the sandbox. The copy in runs in the background (its
        // stdin named, or bash would give it /dev/null); the copy out ends the command when
        // the server closes.
        let script = "exec 3<>/dev/tcp/127.0.0.1/$0 || exit 7; cat <&0 >&3 & cat <&3; kill $! 2>/dev/null; exit 0"
        let command = SandboxCommand(["bash", "-c", script, String(port)])
        do {
            let status = try await backend.interact(
                sandbox, command,
                stdin: inputStream(reading: client, name: "the forwarded connection", onEnd: shared.release),
                terminal: nil, resizes: nil
            ) { chunk in
                guard chunk.stream == .stdout else { return }
                try writeAll(client, chunk.bytes)
            }
            if status.exitCode == 7 {
                CLIOutput.note("corral: nothing listens on port \(port) in \(sandbox)")
            }
        } catch {
            CLIOutput.note("corral: a forwarded connection ended: \(error)")
        }
    }

    static func parsePorts(_ text: String) throws -> (local: Int, remote: Int) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        func port(_ text: String, allowZero: Bool) throws -> Int {
            guard let value = Int(text), value >= (allowZero ? 0 : 1), value <= 65535 else {
                throw ValidationError("'\(text)' is not a port (1-65535): give LOCAL:REMOTE, such as 8080:80")
            }
            return value
        }
        switch parts.count {
        case 1:
            let both = try port(parts[0], allowZero: false)
            return (both, both)
        case 2:
            return (try port(parts[0], allowZero: true), try port(parts[1], allowZero: false))
        default:
            throw ValidationError("give LOCAL:REMOTE or one PORT, such as 8080:80, not '\(text)'")
        }
    }
}

private func writeAll(_ descriptor: Int32, _ bytes: [UInt8]) throws {
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes {
            send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
        }
        if written < 0 {
            if errno == EINTR { continue }
            throw CorralError(.io, "the forwarded connection closed: \(String(cString: strerror(errno)))")
        }
        offset += written
    }
}

/// A forwarded connection's descriptor, closed once both its users are done with it: the
/// relay, which writes to it, and the thread that reads it (`inputStream`). Closed while the
/// other still used it, its number could go to another connection first, whose bytes that
/// other would then read or write.
private final class SharedDescriptor: Sendable {
    let descriptor: Int32
    private let users = Mutex(2)

    init(_ descriptor: Int32) { self.descriptor = descriptor }

    func release() {
        let last = users.withLock { users -> Bool in
            users -= 1
            return users == 0
        }
        if last { Glibc.close(descriptor) }
    }
}

/// A TCP listener on 127.0.0.1 whose accepts wait on a thread of their own.
final class LoopbackListener: Sendable {
    let descriptor: Int32
    let port: Int

    init(port: Int) throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw CorralError(.io, "socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port)).bigEndian
        address.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(descriptor, 64) == 0 else {
            let reason = String(cString: strerror(errno))
            Glibc.close(descriptor)
            throw CorralError(
                .unavailable, "cannot listen on 127.0.0.1:\(port): \(reason)", hint: "choose another local port, or 0")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        self.descriptor = descriptor
        self.port = Int(UInt16(bigEndian: actual.sin_port))
    }

    /// The next connection; waits on a thread, so that no cooperative thread blocks.
    func accept() async throws -> Int32 {
        let descriptor = self.descriptor
        return try await withCheckedThrowingContinuation { continuation in
            Thread {
                while true {
                    let client = Glibc.accept(descriptor, nil, nil)
                    if client >= 0 { return continuation.resume(returning: client) }
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return continuation.resume(
                        throwing: CorralError(.io, "accept: \(String(cString: strerror(errno)))"))
                }
            }.start()
        }
    }

    func close() { Glibc.close(descriptor) }
}
