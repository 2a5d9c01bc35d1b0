import GRPCNIOTransportHTTP2Posix
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Measures the worker link's candidate protocols side by side: HTTP/2 with the roles reversed,
/// as corral has it, and gRPC (grpc-swift-2 over its HTTP/2 NIO transport), on 127.0.0.1.
@main
struct LinkProtocols {
    static let usage = """
        usage: link-protocols [--quick] [--json FILE] [--protocols NAME,...]

        Times small calls (sequential, then 32 callers at once), a 16 MiB streamed answer, and
        small calls beside a stalled 64 MiB answer, for each protocol, in alternating rounds.
        Protocols: \(Candidate.allCases.map(\.rawValue).joined(separator: ", ")).
        """

    /// The protocols measured.
    enum Candidate: String, CaseIterable {
        /// corral's link: the worker dials, the control plane is the HTTP/2 client.
        case http2Reversed = "h2-reversed"
        /// gRPC with its transport's defaults (flush coalescing on), the worker listening.
        case grpc = "grpc"
        /// As `grpc`, with flush coalescing off on both ends.
        case grpcNoCoalescing = "grpc-nocoalesce"
        /// gRPC with corral's orientation: the worker dials and serves.
        case grpcReversed = "grpc-reversed"
    }

    struct Options {
        var quick = false
        var json: String?
        var candidates = Candidate.allCases

        init(_ arguments: [String]) throws {
            var rest = arguments[...]
            while let argument = rest.popFirst() {
                switch argument {
                case "--quick": quick = true
                case "--json":
                    guard let path = rest.popFirst() else { throw BenchError("--json needs a file") }
                    json = path
                case "--protocols":
                    guard let list = rest.popFirst() else { throw BenchError("--protocols needs a list") }
                    candidates = try list.split(separator: ",").map {
                        guard let candidate = Candidate(rawValue: String($0)) else {
                            throw BenchError("no protocol '\($0)'")
                        }
                        return candidate
                    }
                case "-h", "--help":
                    print(usage)
                    exit(0)
                default: throw BenchError("unknown argument '\(argument)'")
                }
            }
        }
    }

    static func main() async {
        let options: Options
        do {
            options = try Options(Array(CommandLine.arguments.dropFirst()))
        } catch {
            log("link-protocols: \(error)\n\(usage)")
            exit(2)
        }
        do {
            try await run(options)
        } catch {
            log("link-protocols: \(error)")
            exit(1)
        }
    }

    /// A line on standard error: progress, kept out of the table.
    static func log(_ message: String) {
        let line = message + "\n"
        _ = line.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
    }

    static func run(_ options: Options) async throws {
        let started = Measure.clock.now
        let plan = options.quick ? Plan.quick : Plan.full
        // Each end has an event loop thread of its own, as two processes would.
        let controlPlane = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let worker = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var links: [any LinkClient] = []
        for candidate in options.candidates {
            let name = candidate.rawValue
            switch candidate {
            case .http2Reversed:
                links.append(try await HTTP2Link.start(controlPlane: controlPlane, worker: worker))
            case .grpc, .grpcNoCoalescing:
                links.append(
                    try await GRPCLink<HTTP2ClientTransport.Posix>.standard(
                        name: name, coalescing: candidate == .grpc, controlPlane: controlPlane, worker: worker))
            case .grpcReversed:
                links.append(
                    try await GRPCLink<HTTP2ClientTransport.WrappedChannel>.reversed(
                        name: name, controlPlane: controlPlane, worker: worker))
            }
        }
        let report: Report
        do {
            report = try await measure(links, plan: plan, quick: options.quick, started: started)
        } catch {
            for link in links { await link.shutdown() }
            throw error
        }
        for link in links { await link.shutdown() }
        // The transports go before their event loops do: some still schedule work as they go.
        links.removeAll()
        try await controlPlane.shutdownGracefully()
        try await worker.shutdownGracefully()

        print(
            "link-protocols: \(options.quick ? "quick" : "full") run on 127.0.0.1, both ends in one process, "
                + "\(System.coreCount) cores")
        print(
            "sequential: \(plan.sequentialCalls) calls of 100 B each way; \(plan.callers) callers for "
                + "\(Measure.microseconds(plan.concurrentDuration) / 1e6) s; \(plan.streamRuns) streams of "
                + "\(plan.streamBytes >> 20) MiB in 64 KiB pieces; stalled: \(plan.stallBytes >> 20) MiB unread, "
                + "\(plan.stalledCalls) calls beside it; \(plan.rounds) alternating rounds each")
        print(
            "machine's load average (1 min) before/after: "
                + "\(report.loadAverageBefore.map { Report.format($0, digits: 2) } ?? "?")/"
                + "\(report.loadAverageAfter.map { Report.format($0, digits: 2) } ?? "?")")
        print("")
        print(report.table)
        print("")
        print(
            "release binary: \(report.binaryBytes.map { "\($0) bytes" } ?? "unknown") (one binary holds every protocol)"
        )
        print("peak RSS: \(report.peakResidentBytes.map { "\($0 >> 20) MiB" } ?? "unknown") (whole process)")
        print("run took \(Report.format(report.seconds)) s")
        if let path = options.json {
            try report.write(to: path)
            print("figures written to \(path)")
        }
    }

    /// Runs every measure on every link, in alternating rounds, and sums up.
    static func measure(
        _ links: [any LinkClient], plan: Plan, quick: Bool, started: ContinuousClock.Instant
    ) async throws -> Report {
        let loadBefore = ProcessFigures.loadAverage
        var samples: [String: Samples] = [:]
        for link in links {
            log("warming up \(link.name)")
            _ = try await Measure.sequential(link, calls: plan.warmupCalls)
            _ = try await Measure.stream(link, bytes: plan.streamBytes, runs: 2)
            _ = try await Measure.concurrent(link, callers: plan.callers, duration: .milliseconds(200))
            samples[link.name] = Samples()
        }
        /// Each round visits every link, starting one further along than the round before.
        func rounds(_ section: Section, _ body: (any LinkClient) async throws -> Void) async throws {
            log(section.rawValue)
            for round in 0..<plan.rounds {
                for offset in links.indices {
                    let link = links[(round + offset) % links.count]
                    let cpu = ProcessFigures.cpuSeconds
                    try await body(link)
                    samples[link.name]?.cpuSeconds[section, default: 0] += ProcessFigures.cpuSeconds - cpu
                }
            }
        }
        try await rounds(.sequential) { link in
            samples[link.name]?.sequential += try await Measure.sequential(
                link, calls: plan.sequentialCalls / plan.rounds)
        }
        try await rounds(.concurrent) { link in
            let (latencies, seconds) = try await Measure.concurrent(
                link, callers: plan.callers, duration: plan.concurrentDuration / plan.rounds)
            samples[link.name]?.concurrent += latencies
            samples[link.name]?.concurrentSeconds += seconds
        }
        try await rounds(.stream) { link in
            samples[link.name]?.stream += try await Measure.stream(
                link, bytes: plan.streamBytes, runs: plan.streamRuns / plan.rounds)
        }
        try await rounds(.stalled) { link in
            let (baseline, latencies, received, atStart, atEnd) = try await Measure.stalled(
                link, plan: plan, calls: plan.stalledCalls / plan.rounds)
            samples[link.name]?.stalledBaseline += baseline
            samples[link.name]?.stalled += latencies
            samples[link.name]?.stalledReceived.append(received)
            samples[link.name]?.stalledWrittenAtStart.append(atStart)
            samples[link.name]?.stalledWrittenAtEnd.append(atEnd)
        }
        return Report(
            quick: quick,
            sequentialCalls: plan.sequentialCalls, callers: plan.callers,
            concurrentSeconds: Measure.microseconds(plan.concurrentDuration) / 1e6,
            streamMebibytes: plan.streamBytes >> 20, streamRuns: plan.streamRuns,
            stallMebibytes: plan.stallBytes >> 20, stalledCalls: plan.stalledCalls,
            protocols: links.map { Figures(name: $0.name, samples: samples[$0.name] ?? Samples(), plan: plan) },
            binaryBytes: ProcessFigures.binaryBytes, peakResidentBytes: ProcessFigures.peakResidentBytes,
            loadAverageBefore: loadBefore, loadAverageAfter: ProcessFigures.loadAverage,
            seconds: Measure.microseconds(Measure.clock.now - started) / 1e6)
    }
}
