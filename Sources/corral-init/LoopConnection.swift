import ControlProtocol
import Glibc

/// The control connection as the control loop holds it: a non-blocking socket, what was read
/// and not yet cut into frames, and what waits to be written. Owned by the loop's thread.
final class LoopConnection {
    let fd: Int32
    /// Whether the host welcomed this connection.
    var welcomed = false
    private var inbound: [UInt8] = []
    private var inboundStart = 0
    private var outbound: [UInt8] = []
    private var outboundStart = 0
    private var readBuffer = [UInt8](repeating: 0, count: 64 << 10)

    /// Output is produced only while less than this waits to be written: the host's reading
    /// speed, not corral-init's memory, sets the pace.
    static let outboundLimit = 512 << 10

    init(fd: Int32) {
        self.fd = fd
        outbound.reserveCapacity(Self.outboundLimit + ControlFrameHeader.maxSandboxPayload)
    }

    var pendingOutput: Int { outbound.count - outboundStart }
    var hasRoom: Bool { pendingOutput < Self.outboundLimit }

    /// Queues one frame.
    func send<Payload: Collection<UInt8>>(_ kind: ControlFrameKind, _ id: UInt32, _ payload: Payload) {
        ControlFrameHeader(kind, id: id, length: payload.count).append(to: &outbound)
        outbound.append(contentsOf: payload)
    }

    func send(_ kind: ControlFrameKind, _ id: UInt32) { send(kind, id, EmptyCollection<UInt8>()) }

    /// Writes what it can without blocking; false when the connection is broken.
    func flush() -> Bool {
        while outboundStart < outbound.count {
            let written = outbound.withUnsafeBytes { raw -> Int in
                guard let base = raw.baseAddress else { return 0 }
                return Glibc.send(
                    fd, base + outboundStart, raw.count - outboundStart, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if written > 0 {
                outboundStart += written
            } else if written < 0 && errno == EINTR {
                continue
            } else if written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                break
            } else {
                return false
            }
        }
        if outboundStart == outbound.count {
            outbound.removeAll(keepingCapacity: true)
            outboundStart = 0
        } else if outboundStart > Self.outboundLimit {
            outbound.removeFirst(outboundStart)
            outboundStart = 0
        }
        return true
    }

    /// Reads what is there without blocking; false at the end of the stream or on an error.
    func receive() -> Bool {
        for _ in 0..<16 {
            let count = readBuffer.withUnsafeMutableBytes { raw -> Int in
                recv(fd, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT))
            }
            if count > 0 {
                if inboundStart > 0 && inboundStart == inbound.count {
                    inbound.removeAll(keepingCapacity: true)
                    inboundStart = 0
                }
                inbound.append(contentsOf: readBuffer[0..<count])
                if count < readBuffer.count { return true }
            } else if count == 0 {
                return false
            } else if errno == EINTR {
                continue
            } else {
                return errno == EAGAIN || errno == EWOULDBLOCK
            }
        }
        return true
    }

    enum Next {
        case frame(ControlFrameHeader, ArraySlice<UInt8>)
        case incomplete
        case malformed(UInt8, Int)
    }

    /// The next whole frame read, if any.
    func nextFrame() -> Next {
        let available = inbound.count - inboundStart
        guard available >= ControlFrameHeader.size,
            let header = ControlFrameHeader(parsing: inbound[inboundStart..<(inboundStart + ControlFrameHeader.size)])
        else { return .incomplete }
        guard header.isValid, let kind = header.kind, !kind.fromSandbox else {
            return .malformed(header.rawKind, header.length)
        }
        guard available >= ControlFrameHeader.size + header.length else { return .incomplete }
        let payloadStart = inboundStart + ControlFrameHeader.size
        let payload = inbound[payloadStart..<(payloadStart + header.length)]
        inboundStart = payloadStart + header.length
        if inboundStart > 1 << 20 {
            inbound.removeFirst(inboundStart)
            inboundStart = 0
            return .frame(header, ArraySlice(payload))
        }
        return .frame(header, payload)
    }

    func close() {
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
    }
}
