import Foundation

/// Tells when files change in watched directories, through inotify, on one dedicated thread.
/// The store watches a session's directory while someone waits for its head to move, so that
/// appends made by another process wake a live tail without polling.
final class DirectoryWatcher: @unchecked Sendable {
    // @unchecked: `watches`, `byDescriptor`, `thread` and `stopping` are guarded by `mutex`;
    // the descriptors are set once in init.
    private var mutex = pthread_mutex_t()
    private let inotifyFD: Int32
    /// Read end of a pipe whose write end `shutdown` writes to, to end the thread's poll.
    private let wakeFD: Int32
    private let wakeWriteFD: Int32
    private var watches: [String: (descriptor: Int32, count: Int, callback: @Sendable () -> Void)] = [:]
    private var byDescriptor: [Int32: @Sendable () -> Void] = [:]
    private var threadStarted = false
    private var stopping = false

    init() {
        pthread_mutex_init(&mutex, nil)
        inotifyFD = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        var ends: [Int32] = [-1, -1]
        if pipe(&ends) == 0 {
            for end in ends {
                _ = fcntl(end, F_SETFD, FD_CLOEXEC)
                _ = fcntl(end, F_SETFL, O_NONBLOCK)
            }
        } else {
            ends = [-1, -1]
        }
        wakeFD = ends[0]
        wakeWriteFD = ends[1]
    }

    deinit {
        if inotifyFD >= 0 { close(inotifyFD) }
        if wakeFD >= 0 { close(wakeFD) }
        if wakeWriteFD >= 0 { close(wakeWriteFD) }
        pthread_mutex_destroy(&mutex)
    }

    /// Starts (or counts one more use of) a watch on `directory`. Returns false when inotify
    /// is unavailable; the caller then learns of other processes' appends only when it reads.
    @discardableResult
    func retain(_ directory: String, onChange callback: @escaping @Sendable () -> Void) -> Bool {
        guard inotifyFD >= 0, wakeFD >= 0 else { return false }
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if var existing = watches[directory] {
            existing.count += 1
            watches[directory] = existing
            return true
        }
        let mask = UInt32(IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE)
        let descriptor = inotify_add_watch(inotifyFD, directory, mask)
        guard descriptor >= 0 else { return false }
        watches[directory] = (descriptor, 1, callback)
        byDescriptor[descriptor] = callback
        if !threadStarted && !stopping {
            threadStarted = true
            let thread = Thread { [self] in self.loop() }
            thread.name = "corral-session-watch"
            thread.start()
        }
        return true
    }

    func release(_ directory: String) {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        guard var existing = watches[directory] else { return }
        existing.count -= 1
        if existing.count > 0 {
            watches[directory] = existing
        } else {
            watches[directory] = nil
            byDescriptor[existing.descriptor] = nil
            inotify_rm_watch(inotifyFD, existing.descriptor)
        }
    }

    func shutdown() {
        pthread_mutex_lock(&mutex)
        stopping = true
        pthread_mutex_unlock(&mutex)
        var one: UInt8 = 1
        _ = write(wakeWriteFD, &one, 1)
    }

    private func loop() {
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            var fds = [
                pollfd(fd: inotifyFD, events: Int16(POLLIN), revents: 0),
                pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
            ]
            let ready = poll(&fds, 2, -1)
            if ready < 0 && errno != EINTR { return }
            pthread_mutex_lock(&mutex)
            let stop = stopping
            pthread_mutex_unlock(&mutex)
            if stop { return }
            guard fds[0].revents & Int16(POLLIN) != 0 else { continue }
            var changed = Set<Int32>()
            while true {
                let count = buffer.withUnsafeMutableBytes { read(inotifyFD, $0.baseAddress, $0.count) }
                guard count > 0 else { break }
                buffer.withUnsafeBytes { raw in
                    var offset = 0
                    while offset + MemoryLayout<inotify_event>.size <= count {
                        let descriptor = raw.loadUnaligned(fromByteOffset: offset, as: Int32.self)
                        let nameLength = raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self)
                        changed.insert(descriptor)
                        offset += MemoryLayout<inotify_event>.size + Int(nameLength)
                    }
                }
            }
            pthread_mutex_lock(&mutex)
            let callbacks = changed.compactMap { byDescriptor[$0] }
            pthread_mutex_unlock(&mutex)
            for callback in callbacks { callback() }
        }
    }
}
