import CCorralInit
import Glibc

/// `corral-init spawn-floor [COUNT] [PROGRAM [ARGUMENT...]]`: the floor under any way of running
/// a command in this sandbox. Starts PROGRAM (/bin/true by default) COUNT times (200), one
/// after the other, the way the control loop does (vfork, a new session, exec) and waits for
/// each, then prints one JSON line: the runs, the median and 95th percentile of one
/// start-to-reaped cycle in microseconds, and every sample in the order taken.
enum SpawnFloor {
    static func run(_ arguments: [String]) -> Int32 {
        var count = 200
        var program = ["/bin/true"]
        if let first = arguments.first {
            guard let parsed = Int(first), (1...100_000).contains(parsed) else {
                logLine("spawn-floor: \(first) is not a count of runs (1-100000)")
                return 2
            }
            count = parsed
            if arguments.count > 1 { program = Array(arguments.dropFirst()) }
        }
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        guard devNull >= 0 else {
            logLine("spawn-floor: cannot open /dev/null: \(describeErrno(errno))")
            return 1
        }
        let environment = CommandSpawner.baseEnvironment
        let candidates = CommandSpawner.resolve(
            program[0], path: CommandSpawner.value(of: "PATH", in: environment) ?? CommandSpawner.defaultPath)
        let argv = CStringArray(program)
        let envp = CStringArray(environment)
        let paths = CStringArray(candidates)
        var request = corral_spawn_request(
            argv: UnsafePointer(argv.pointer), envp: UnsafePointer(envp.pointer),
            candidates: UnsafePointer(paths.pointer), directory: nil, stdin_fd: devNull, stdout_fd: devNull,
            stderr_fd: devNull, terminal_fd: -1)
        var samples: [Int64] = []
        samples.reserveCapacity(count)
        for _ in 0..<count {
            let started = MonotonicInstant.now()
            var pid: pid_t = 0
            var step: Int32 = 0
            let result = corral_spawn(&request, &pid, &step)
            guard result == 0 else {
                logLine("spawn-floor: cannot start \(program[0]): \(describeErrno(result))")
                return 1
            }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            samples.append((MonotonicInstant.now().nanoseconds - started.nanoseconds) / 1000)
        }
        let sorted = samples.sorted()
        let median = sorted[sorted.count / 2]
        let p95 = sorted[min(sorted.count - 1, (sorted.count * 95) / 100)]
        let all = samples.map(String.init).joined(separator: ",")
        print("{\"runs\":\(count),\"median_us\":\(median),\"p95_us\":\(p95),\"samples_us\":[\(all)]}")
        return 0
    }
}
