import CCurl
import CorralCore
import Foundation
import Synchronization

/// A curl multi handle driven by one dedicated thread.
///
/// Blocking curl calls never run on Swift's cooperative pool: every transfer is added to this
/// loop, which polls sockets and runs callbacks on its own thread. Other threads talk to it
/// only by queueing commands and waking it (`curl_multi_wakeup` is thread-safe). The multi
/// handle keeps the connection cache, so consecutive plain requests reuse connections.
final class CurlEventLoop: @unchecked Sendable {
    private enum Command {
        case add(CurlTransfer)
        case remove(CurlTransfer)
        case unpause(CurlTransfer)
    }

    private let multi: UnsafeMutableRawPointer
    private let commands = Mutex<(queue: [Command], stopping: Bool)>(([], false))
    private let stopped = Mutex<Bool>(false)
    // Loop-thread only.
    private var active: [UnsafeMutableRawPointer: CurlTransfer] = [:]

    init(maxConnections: Int) throws {
        try CurlLibrary.load()
        guard let multi = corral_curl_multi_init() else {
            throw CorralError(.internalError, "libcurl could not allocate a multi handle")
        }
        self.multi = multi
        _ = corral_curl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, maxConnections)
        let thread = Thread { [self] in self.run() }
        thread.name = "corral-curl"
        thread.start()
    }

    deinit {
        corral_curl_multi_cleanup(multi)
    }

    func add(_ transfer: CurlTransfer) {
        transfer.loop = self
        send(.add(transfer))
    }

    func remove(_ transfer: CurlTransfer) { send(.remove(transfer)) }

    func unpause(_ transfer: CurlTransfer) { send(.unpause(transfer)) }

    /// Stops the loop thread; transfers still running fail as cancelled.
    func stop() {
        commands.withLock { $0.stopping = true }
        corral_curl_multi_wakeup(multi)
    }

    private func send(_ command: Command) {
        let accepted = commands.withLock { state -> Bool in
            guard !state.stopping else { return false }
            state.queue.append(command)
            return true
        }
        if accepted {
            corral_curl_multi_wakeup(multi)
        } else if case .add(let transfer) = command {
            transfer.cancel()
        }
    }

    private func run() {
        while true {
            let (batch, stopping) = commands.withLock { state in
                let batch = state.queue
                state.queue.removeAll(keepingCapacity: true)
                return (batch, state.stopping)
            }
            for command in batch { apply(command) }
            if stopping { break }
            var running: Int32 = 0
            _ = corral_curl_multi_perform(multi, &running)
            collectFinished()
            _ = corral_curl_multi_poll(multi, nil, 0, 1000, nil)
        }
        for (easy, transfer) in active {
            corral_curl_multi_remove_handle(multi, easy)
            transfer.cancel()
        }
        active.removeAll()
    }

    private func apply(_ command: Command) {
        switch command {
        case .add(let transfer):
            let code = corral_curl_multi_add_handle(multi, transfer.easy)
            if code == CURLM_OK {
                active[transfer.easy] = transfer
            } else {
                transfer.complete(CURLE_FAILED_INIT)
            }
        case .remove(let transfer):
            if active.removeValue(forKey: transfer.easy) != nil {
                corral_curl_multi_remove_handle(multi, transfer.easy)
            }
        case .unpause(let transfer):
            if active[transfer.easy] != nil {
                _ = corral_curl_easy_pause(transfer.easy, corral_CURLPAUSE_CONT)
            }
        }
    }

    private func collectFinished() {
        var remaining: Int32 = 0
        while let message = corral_curl_multi_info_read(multi, &remaining) {
            guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle else { continue }
            let code = message.pointee.data.result
            corral_curl_multi_remove_handle(multi, easy)
            if let transfer = active.removeValue(forKey: easy) {
                transfer.complete(code)
            }
        }
    }
}

enum CurlLibrary {
    /// Opens libcurl and runs curl_global_init, once per process (see CCurl's header: the
    /// library is loaded on first use, not at start-up).
    static func load() throws {
        var error = [CChar](repeating: 0, count: 512)
        guard corral_curl_load(&error, error.count) == 0 else {
            let reason = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw CorralError(.unavailable, reason, hint: "install libcurl (apt-get install libcurl4)")
        }
    }
}
