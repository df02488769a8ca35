#if canImport(Glibc)
import Glibc
#endif

/// Set only to keep `EventLoopFloor`'s reads from being optimised away.
nonisolated(unsafe) private var blackHole: UInt64 = 0

/// The least CPU any world of a run's shape can take; `gquic-bench sim` prints it beside each
/// 10,000-node run. For each event: pop the earliest of `pending` events from the simulator's own
/// `EventQueue`, touch one random node's `stateBytes` of state (a read-modify-write, after
/// `dependentReads` reads each at an address the last one gave, the way a lookup chains through a
/// table), and schedule one event 1–200 ms later at a random node. Nothing else: no protocol, no
/// links, no trace. The 10,000-node membership run spreads ~3.7 GiB over its nodes and each event
/// lands on a node whose state has gone cold, so this prices the event count alone, on this
/// machine, against the target.
public struct EventLoopFloor: Sendable {
    public var nodes: Int
    public var stateBytes: Int
    public var pending: Int
    public var dependentReads: Int

    public init(nodes: Int, stateBytes: Int, pending: Int, dependentReads: Int) {
        self.nodes = max(1, nodes); self.stateBytes = stateBytes; self.pending = pending; self.dependentReads = dependentReads
    }

    /// CPU nanoseconds per event over `events` events (after the state is filled).
    public func nanosecondsPerEvent(timing events: Int) -> Double {
        let words = max(1, stateBytes / 8)
        var rng = XorShift()
        var state = [UInt64](repeating: 0, count: nodes * words)
        for i in state.indices { state[i] = rng.next() }
        var queue = EventQueue<Int32>()
        for _ in 0..<pending { queue.push(at: rng.next() % 200_000_000, Int32(rng.next() % UInt64(nodes))) }
        var sink: UInt64 = 0
        let start = cpuSeconds()
        for _ in 0..<events {
            guard let e = queue.pop() else { break }
            let base = Int(e.payload) * words
            var at = Int(e.time % UInt64(words))
            for _ in 0..<dependentReads {
                let v = state[base + at]
                sink &+= v
                at = Int(v % UInt64(words))
            }
            state[base + at] &+= 1
            queue.push(at: e.time + 1_000_000 + rng.next() % 199_000_000, Int32(rng.next() % UInt64(nodes)))
        }
        let seconds = cpuSeconds() - start
        // Keep the reads: the sum decides nothing, but the optimiser cannot drop the loop.
        if sink == 1 { blackHole = sink }
        return seconds * 1e9 / Double(events)
    }

    private struct XorShift {
        var s: UInt64 = 0x9E37_79B9_7F4A_7C15
        @inline(__always) mutating func next() -> UInt64 { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s }
    }

    private func cpuSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
}
