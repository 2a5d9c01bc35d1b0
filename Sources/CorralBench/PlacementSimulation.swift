import CorralCore
import CorralFleet
import Foundation

/// How many workers placement should sample (`[workers] sample`, K), measured with placement's
/// own choice (`WorkerFleet.bestOfSample`) on a simulated fleet: no engine, no processes, the
/// same arithmetic.
///
/// The control plane sees a worker's sandboxes as its last heartbeat listed them, so every
/// create between two heartbeats is chosen on the same view. Sampling all workers (K = the
/// fleet) then sends a heartbeat's worth of creates to the one worker that looked emptiest;
/// sampling one is blind. The simulation runs a fleet under churn (creates arriving, sandboxes
/// ending) and reports, per K, the fullest worker's share of its room at each heartbeat and the
/// creates placed on a worker that was already full.
struct PlacementSimulation {
    /// Sandboxes each worker takes; mixed hosts.
    var capacities: [Int] = Array(repeating: 32, count: 6) + Array(repeating: 64, count: 6)
    /// Creates between two heartbeats.
    var createsPerHeartbeat = 30
    /// The share of the fleet's room in use on average.
    var load = 0.7
    var heartbeats = 400
    var warmUp = 50

    struct Outcome {
        /// The fullest worker's sandboxes over its room, at each heartbeat after the warm-up.
        var fullest = Samples()
        /// Creates placed on a worker already at its room, per hundred creates.
        var overfullPercent = 0.0
    }

    func run(sample: Int, seed: UInt64) -> Outcome {
        var generator = SplitMix64(seed: seed)
        let room = capacities.reduce(0, +)
        // Little's law: arrivals per heartbeat times the mean lifetime is the mean occupancy.
        let meanLifetime = load * Double(room) / Double(createsPerHeartbeat)
        var live = [[Double]](repeating: [], count: capacities.count)  // end times, per worker
        var view = [Int](repeating: 0, count: capacities.count)
        var outcome = Outcome()
        var placed = 0
        var overfull = 0
        for beat in 0..<heartbeats {
            // The heartbeat: sandboxes that ended are gone, and the view is what each worker lists.
            let now = Double(beat)
            for index in live.indices { live[index].removeAll { $0 <= now } }
            view = live.map(\.count)
            if beat >= warmUp {
                let fullest = zip(live, capacities).map { Double($0.count) / Double($1) }.max() ?? 0
                outcome.fullest.append(fullest)
            }
            for _ in 0..<createsPerHeartbeat {
                let options = capacities.indices.map {
                    ($0, Double(capacities[$0] - view[$0]) / Double(capacities[$0]))
                }
                guard
                    let chosen = WorkerFleet.bestOfSample(options, sample: sample, free: { $0.1 }, using: &generator),
                    chosen.1 > 0
                else { continue }
                let worker = chosen.0
                if beat >= warmUp {
                    placed += 1
                    if live[worker].count >= capacities[worker] { overfull += 1 }
                }
                // An exponential lifetime, starting within this heartbeat.
                let start = now + Double.random(in: 0..<1, using: &generator)
                let lifetime = -meanLifetime * log(1 - Double.random(in: 0..<1, using: &generator))
                live[worker].append(start + lifetime)
            }
        }
        outcome.overfullPercent = placed == 0 ? 0 : 100 * Double(overfull) / Double(placed)
        return outcome
    }

    /// One comparison: K = 1, 2, 3, 4, 6 and the whole fleet, each over a few seeds.
    func comparison(seeds: Int) -> Comparison {
        var measurements: [Measurement] = []
        var overfull: [String] = []
        for sample in [1, 2, 3, 4, 6, capacities.count] {
            var fullest = Samples()
            var overfullShares = Samples()
            for seed in 0..<seeds {
                let outcome = run(sample: sample, seed: UInt64(seed + 1))
                for value in outcome.fullest.values { fullest.append(value * 100) }
                overfullShares.append(outcome.overfullPercent)
            }
            let name = sample == capacities.count ? "K=\(sample) (all)" : "K=\(sample)"
            measurements.append(Measurement(subject: "\(name): fullest worker", unit: "% of room", samples: fullest))
            overfull.append("\(name) \(String(format: "%.2f", overfullShares.median))%")
        }
        measurements.append(
            Measurement(subject: "default [workers] sample", unit: "K", value: Double(WorkerFleet.Settings().sample)))
        return Comparison(
            metric:
                "placement, simulated: \(capacities.count) workers (32 or 64 sandboxes), \(createsPerHeartbeat) creates per heartbeat at \(Int(load * 100))% load; creates placed on a full worker: \(overfull.joined(separator: ", "))",
            measurements: measurements)
    }
}
