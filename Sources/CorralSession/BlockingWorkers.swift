import Foundation

/// A few dedicated threads for the calls that may block for long: fdatasync above all.
/// Swift's cooperative pool has one thread per core, and an fsync that takes milliseconds
/// there would stall every task on that thread; here it stalls nothing else.
///
/// Jobs run in deadline order; a job without a deadline runs as soon as a thread is free.
/// Threads start on demand, up to `maxThreads`, and end at `shutdown()`.
final class BlockingWorkers: @unchecked Sendable {
    // @unchecked: every mutable field below is guarded by `mutex`.
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var jobs: [(deadline: UInt64, sequence: UInt64, run: @Sendable () -> Void)] = []
    private var sequence: UInt64 = 0
    private var threads = 0
    private var idle = 0
    private var stopping = false
    private let maxThreads: Int
    private let name: String

    init(maxThreads: Int, name: String) {
        self.maxThreads = max(1, maxThreads)
        self.name = name
        pthread_mutex_init(&mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(&condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    static func monotonicNow() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }

    /// Runs `job` on a worker thread, not before `deadline` (monotonic nanoseconds).
    func submit(notBefore deadline: UInt64 = 0, _ job: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(&mutex)
        sequence += 1
        let entry = (deadline: deadline, sequence: sequence, run: job)
        let position = jobs.firstIndex { ($0.deadline, $0.sequence) > (deadline, entry.sequence) } ?? jobs.endIndex
        jobs.insert(entry, at: position)
        let startThread = idle == 0 && threads < maxThreads && !stopping
        if startThread { threads += 1 }
        // Broadcast: a thread in a timed wait for a later deadline must re-evaluate.
        pthread_cond_broadcast(&condition)
        pthread_mutex_unlock(&mutex)
        if startThread {
            let thread = Thread { [self] in self.loop() }
            thread.name = name
            thread.start()
        }
    }

    /// Lets the threads finish the queued jobs, then end.
    func shutdown() {
        pthread_mutex_lock(&mutex)
        stopping = true
        pthread_cond_broadcast(&condition)
        pthread_mutex_unlock(&mutex)
    }

    private func loop() {
        pthread_mutex_lock(&mutex)
        while true {
            if let first = jobs.first {
                let now = Self.monotonicNow()
                if first.deadline <= now || stopping {
                    jobs.removeFirst()
                    pthread_mutex_unlock(&mutex)
                    first.run()
                    pthread_mutex_lock(&mutex)
                    continue
                }
                var until = timespec(
                    tv_sec: Int(first.deadline / 1_000_000_000), tv_nsec: Int(first.deadline % 1_000_000_000))
                idle += 1
                pthread_cond_timedwait(&condition, &mutex, &until)
                idle -= 1
            } else if stopping {
                threads -= 1
                pthread_mutex_unlock(&mutex)
                return
            } else {
                idle += 1
                pthread_cond_wait(&condition, &mutex)
                idle -= 1
            }
        }
    }
}
