import CorralAPI
import CorralSandbox
import NIOCore
import NIOHTTPTypes

// What both ends of a worker link use from here: the worker (CorralWorker) serves this
// host's routes on its link with these.

extension WorkerPoolStatus {
    package init(_ status: PoolStatus) {
        self.init(template: status.template.rawValue, ready: status.idle, target: status.minIdle)
    }
}

/// On each HTTP/2 stream a worker serves: the caller's presence, gone when the stream closes
/// (the control plane resets it when its own client leaves), so that a command stops with it.
package final class StreamPresenceHandler: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = HTTPRequestPart
    package typealias InboundOut = HTTPRequestPart

    package init() {}

    package let presence = ClientPresence()

    package func channelInactive(context: ChannelHandlerContext) {
        presence.markGone()
        context.fireChannelInactive()
    }
}
