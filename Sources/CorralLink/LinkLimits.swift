import NIOCore

/// What both ends of a link configure alike.
package enum WorkerLinkLimits {
    /// The largest HTTP/2 frame either end of a link takes (the protocol's default is 16 KiB):
    /// command output and archives in frames of up to 1 MiB, each a hop through a stream's
    /// channel and tasks fewer.
    package static let maxFrameSize = 1 << 20
}

/// A connection and its handshake's head to come: the listener's, and the worker's dial.
package struct LinkAccepted: Sendable {
    /// The name of the handshake's reader in a link's pipeline, removed once the head is read.
    package static let readerName = "corral.worker-link.handshake"

    package let channel: any Channel
    package let head: EventLoopFuture<LinkHead>

    package init(channel: any Channel, head: EventLoopFuture<LinkHead>) {
        self.channel = channel
        self.head = head
    }
}
