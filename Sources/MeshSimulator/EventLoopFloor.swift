import MeshCore

/// What a run's event count costs if every event takes one cold touch of its node's state and does
/// nothing else; `gquic-bench sim` prints it beside each 10,000-node run. For each event: pop the
/// earliest of `pending` events from the simulator's own `EventQueue`, make one read-modify-write at
/// a random place in a random node's `stateBytes` (after some reads, each at an address the last one
/// gave, the way a lookup chains through a table), and schedule one event 1–200 ms later at a random
/// node. No protocol, no links, no trace.
///
/// With `stateBytes` = the run's peak RSS per node, this is the floor under a world that hosts the
/// real cores: each of 10,000 membership cores holds a view of 10,000 members (3.75 GiB in all), and
/// an event lands on a node whose state has gone cold. It is not a floor for every conceivable
/// simulator: one with less state per node pays less per touch (docs/benchmarks.md, sim, session 11).
///
/// Benchmark code, kept in this module so that `EventQueue` is specialised here as it is for the
/// world (called across modules, the generic heap cost three times as much). The CPU clock is the
/// caller's, like every clock this module uses.
public struct EventLoopFloor: Sendable {
    public var nodes: Int
    public var stateBytes: Int
    public var pending: Int

    public init(nodes: Int, stateBytes: Int, pending: Int) {
        precondition(nodes >= 1 && stateBytes >= 8 && pending >= 1, "EventLoopFloor needs a node, 8 bytes of state and a pending event")
        self.nodes = nodes; self.stateBytes = stateBytes; self.pending = pending
    }

    /// The timings of one `measure`: CPU nanoseconds per event for each count of chained reads asked
    /// for, and a checksum of the state (returned so that no optimiser can drop the work).
    public struct Timings: Sendable {
        public var nanosecondsPerEvent: [Double]
        public var checksum: UInt64
    }

    /// Fills the state once; then, for each entry of `dependentReads`, times `events` events
    /// `repetitions` times with that many chained reads before the touch. The fastest timing is the
    /// floor (the others paid for something else on the machine). `cpuSeconds` reads the process's
    /// CPU clock.
    public func measure(events: Int, dependentReads: [Int], repetitions: Int = 3, cpuSeconds: () -> Double) -> Timings {
        precondition(events >= 1 && repetitions >= 1 && dependentReads.allSatisfy { $0 >= 0 })
        let words = stateBytes / 8
        var rng = SeededRandom(seed: 1)
        var state = [UInt64](repeating: 0, count: nodes * words)
        for i in state.indices { state[i] = rng.next() }
        var queue = EventQueue<Int32>()
        for _ in 0..<pending { queue.push(at: rng.next() % 200_000_000, Int32(rng.next() % UInt64(nodes))) }
        var sink: UInt64 = 0
        var timings: [Double] = []
        for reads in dependentReads {
            var best = Double.infinity
            for _ in 0..<repetitions {
                let start = cpuSeconds()
                for _ in 0..<events {
                    guard let e = queue.pop() else { break }
                    let base = Int(e.payload) * words
                    var at = Int(e.time % UInt64(words))
                    for _ in 0..<reads {
                        let v = state[base + at]
                        sink &+= v
                        at = Int(v % UInt64(words))
                    }
                    state[base + at] &+= 1
                    queue.push(at: e.time + 1_000_000 + rng.next() % 199_000_000, Int32(rng.next() % UInt64(nodes)))
                }
                best = min(best, (cpuSeconds() - start) * 1e9 / Double(events))
            }
            timings.append(best)
        }
        for w in state { sink &+= w }
        return Timings(nanosecondsPerEvent: timings, checksum: sink)
    }
}
